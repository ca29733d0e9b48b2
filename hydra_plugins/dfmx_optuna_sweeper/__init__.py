"""``hydra/sweeper=optuna``: a Hydra sweeper that searches dfmx's options with Optuna.

A thin adapter between Hydra and Optuna (``pip install 'dfmx[optuna]'``): the search space
is written in Hydra's override grammar (:mod:`.search_space`), the config is
:class:`.config.OptunaSweeperConf`, the sweeper :class:`.sweeper.OptunaSweeper`. Hydra
imports every module of this package when it starts, so none of them imports Optuna at
module level.
"""
