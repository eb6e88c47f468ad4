"""DRUS itself: the noise schedule, DDRM, the sampler configuration, the noise level and prior-unit scaling of an observation, reconstruction and the DRUSmean / DRUSvar estimators."""
