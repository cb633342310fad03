"""Take the README's screenshot of the MLflow runs table (docs/mlflow-runs-table.png) from a real
store, in a headless Chromium driven by Selenium. Not part of the test suite.

    apt-get install chromium chromium-driver && pip install selenium
    python -m src.train -m depth=2,4 lr=1,8 trainer.max_epochs=300 dataset.resolution=7 dataset.limit_train=500 \
        analysis.gains.enabled=false logger.tracking_uri=sqlite:///demo.db progress.mode=off
    mlflow ui --backend-store-uri sqlite:///demo.db --port 5057 &
    python docs/screenshot_mlflow.py --url http://127.0.0.1:5057 --experiment flatminima

The columns the README recommends are chosen the way the UI itself remembers them: its
per-experiment view state in the browser's localStorage (`selectedColumns`, `runsExpanded`),
written before the page is loaded again.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

COLUMNS = [
    "params.`status`",
    "params.`stop_reason`",
    "params.`model.depth`",
    "params.`optimizer.lr`",
    "params.`init`",
    "metrics.`final_train_loss`",
    "metrics.`loss_vs_affine`",
    "metrics.`lambda_max`",
    "metrics.`lr_times_lambda_max`",
    "attributes.`Dataset`",
]


def main() -> None:
    import mlflow
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:5057")
    parser.add_argument("--experiment", default="flatminima")
    parser.add_argument("--out", default=str(Path(__file__).with_name("mlflow-runs-table.png")))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--driver", default="/usr/bin/chromedriver")
    args = parser.parse_args()

    client = mlflow.MlflowClient(args.url)
    experiment = client.get_experiment_by_name(args.experiment).experiment_id
    parents = client.search_runs([experiment], "tags.multirun = 'parent'")
    options = Options()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=2000,760"):
        options.add_argument(flag)
    options.binary_location = args.chromium
    driver = webdriver.Chrome(options=options, service=Service(args.driver))
    page = f"{args.url}/#/experiments/{experiment}/runs"
    try:
        driver.get(page)
        time.sleep(8)  # the single-page app writes its view state once it has rendered
        key = f'MLflowLocalStorage-1.1-ExperimentPage-["{experiment}"]-ReactComponentState'
        driver.get(f"{args.url}/health")  # same origin, no app: it cannot overwrite the state
        state = json.loads(driver.execute_script("return localStorage.getItem(arguments[0])", key))
        state["selectedColumns"] = COLUMNS
        state["columnWidths"] = {column: 150 for column in COLUMNS[:2]}
        state["runsExpanded"] = {run.info.run_id: True for run in parents}
        driver.execute_script(
            "localStorage.setItem(arguments[0], arguments[1])", key, json.dumps(state)
        )
        driver.execute_script("localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false')")
        driver.get(page)
        time.sleep(8)
        driver.save_screenshot(args.out)
    finally:
        driver.quit()
    print(args.out)


if __name__ == "__main__":
    main()
