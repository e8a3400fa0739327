"""Advantages of proposals from their rewards: group-relative, or GAE over the experiment sequence.

group   proposals sampled together from the same incumbent state form a group; each one's
        advantage is its reward minus the group mean, divided by the group's standard
        deviation (a group of one, or of equal rewards, carries no signal: advantage 0).
        With a fixed `scale` the division is by that number instead: a group whose rewards
        differ by a hundredth of a noise sigma then gets advantages of about a hundredth,
        where division by its own tiny deviation would blow them up to about 1.
gae     the experiments of a run, in the order they were proposed, are one trajectory;
        a value head estimates V(state) from the prompt and generalised advantage estimation
        gives A_t = sum_k (gamma*lam)^k delta_{t+k}, delta_t = r_t + gamma*V_{t+1} - V_t, with
        returns A_t + V_t as the value target. The batch is a fragment of the trajectory, so
        its last state bootstraps from its own value.
Every response token of a proposal shares the proposal's advantage.
"""

from __future__ import annotations

import numpy as np


def group_relative(rewards, groups, eps: float = 1e-6, scale: float | None = None) -> np.ndarray:
    r = np.asarray(rewards, dtype=np.float64)
    g = np.asarray(groups)
    adv = np.zeros_like(r)
    for key in np.unique(g):
        idx = np.flatnonzero(g == key)
        if len(idx) < 2:
            continue
        if scale:
            adv[idx] = (r[idx] - r[idx].mean()) / scale
            continue
        sd = r[idx].std()
        if sd > eps:
            adv[idx] = (r[idx] - r[idx].mean()) / (sd + eps)
    return adv


def gae(rewards, values, gamma: float, lam: float, bootstrap: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(advantages, returns) for one trajectory fragment; `bootstrap` = V after the last step (default: V_last)."""
    r = np.asarray(rewards, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    n = len(r)
    nxt = np.append(v[1:], v[-1] if bootstrap is None else bootstrap) if n else v
    delta = r + gamma * nxt - v
    adv = np.zeros(n)
    acc = 0.0
    for t in range(n - 1, -1, -1):
        acc = delta[t] + gamma * lam * acc
        adv[t] = acc
    return adv, adv + v


def normalise(adv: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Zero mean, unit standard deviation over the batch (a batch of one is left as it is)."""
    if len(adv) < 2:
        return adv
    sd = adv.std()
    return (adv - adv.mean()) / sd if sd > eps else adv - adv.mean()
