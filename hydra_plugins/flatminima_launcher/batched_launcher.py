"""The Hydra plugin of `hydra/launcher=batched` (Hydra finds launchers in the `hydra_plugins`
namespace): a multirun's compatible jobs trained as one batched model, each job still its own
Hydra job and MLflow run. The work is src.launcher's; this module only registers it."""
# No `from __future__ import annotations`: Hydra executes this module before it is in
# sys.modules, and dataclasses then cannot resolve string annotations.

from collections.abc import Sequence
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class BatchedLauncherConf:
    _target_: str = "hydra_plugins.flatminima_launcher.batched_launcher.BatchedLauncher"
    # Members per batched model at most (a larger group is split): the pipeline's
    # compute.max_models_per_batch.
    max_models_per_batch: int = 16


ConfigStore.instance().store(
    group="hydra/launcher", name="batched", node=BatchedLauncherConf, provider="flatminima"
)


class BatchedLauncher(Launcher):
    def __init__(self, max_models_per_batch: int = 16) -> None:
        self.max_models_per_batch = max_models_per_batch
        self.work = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        # Imported here, not when Hydra scans its plugins: any Hydra app in this environment
        # scans them, and only this project's needs torch and Lightning.
        from src.launcher import BatchedLauncher as Work

        self.work = Work(hydra_context, task_function, config, self.max_models_per_batch)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        assert self.work is not None, "setup() first"
        return self.work.launch(job_overrides, initial_job_idx)
