"""mmalign.robotics: robot policies trained from preferences.

A Gaussian actor-critic (`policy`) over vector envs (`sampler`), preference feedback (`feedback`: segments, queries,
scripted teachers, reward-model ensembles), the robot task for the Trainer's PrefPPO (`task`), PEBBLE with SAC
(`pebble`, `sac`), and PEARL: cross-task preference transfer by Gromov-Wasserstein optimal transport (`cpa`) and
robust reward learning (`rrl`), with IQL on offline data (`iql`, `offline_data`; the pipeline in `pearl`,
`pearl_run`). See docs/robotics.md and docs/pearl.md.
"""
