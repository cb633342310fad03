"""Exact computations for the theory of Mulayoff & Michaeli (ICML 2020), Secs. 2-5, App. II-VIII.

Modules
-------
- `scalar`: scalar networks (Sec. 3, App. III): minima, sharpness (10), flattest minima (12)-(13),
  line-interpolation sharpness (Claim S1) and the Lemma 2 construction (S29).
- `linear`: deep linear networks: T from data (3), Hessian through Phi (15)-(16), its top
  eigenvalue from the small matrix 2 Phi^T Phi (20), canonical / arbitrary / Theorem 4 minima
  (27), (S104), greedy random walk (S105)-(S106), gains (Thm 2) and layer coupling (Thm 3),
  nu(B) of eq. (25).
- `lemma1`: gradient descent / small-step gradient flow from identity initialization (Lemma 1).
- `verify`: every claim checked over randomized cases (`python -m src.theory.verify --out F.json`).
- `figures`: data for and drawing of Figures 1-3.

Everything is float64 numpy; torch (float64, CPU) is used only for autograd cross-checks.
"""
