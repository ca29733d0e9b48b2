"""On-disk cache of raw (unpooled) backbone features, shared by the jobs of a sweep.

Extracting backbone features is the expensive part of a job; pooling, PCA and scoring are
cheap. Jobs that differ only in pooling, PCA level or scorer read the same raw features, so
they are stored once per *(key, split)*:

* :mod:`~dfmx.features.cache.keys` — what identifies an entry (the feature key, weights
  fingerprints, checksums);
* :mod:`~dfmx.features.cache.layout` — the names in a cache folder and the proof that a
  file is an entry the cache wrote;
* :mod:`~dfmx.features.cache.store` — :class:`FeatureCache`, the verified, locked store
  (and the entries a sweep's process keeps in memory, :func:`keep_read_entries`);
* :mod:`~dfmx.features.cache.eviction` — keeping the folder within ``max_gb``, touching
  only the cache's own files.
"""

from dfmx.features.cache.keys import CACHE_FORMAT_VERSION, feature_key, weights_fingerprint
from dfmx.features.cache.layout import default_feature_cache_dir
from dfmx.features.cache.store import (
    DEFAULT_MAX_GB,
    CorruptEntryError,
    FeatureCache,
    keep_read_entries,
)

__all__ = [
    "CACHE_FORMAT_VERSION",
    "DEFAULT_MAX_GB",
    "CorruptEntryError",
    "FeatureCache",
    "default_feature_cache_dir",
    "feature_key",
    "keep_read_entries",
    "weights_fingerprint",
]
