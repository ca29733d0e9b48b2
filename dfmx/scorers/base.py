"""The scorer contract under the import path third-party scorer plugins use.

The contract belongs to the engine (:mod:`dfmx.engine.scorer`); this module names the same
classes, so ``from dfmx.scorers.base import Scorer, ScoreOutput`` in a published plugin
keeps working.
"""

from dfmx.engine.scorer import NoParams, ScoreOutput, Scorer

__all__ = ["NoParams", "ScoreOutput", "Scorer"]
