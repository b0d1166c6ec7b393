"""The front end: the one :class:`~detector.frontend.features.FeatureConfig`, the
incremental log-mel stage and the patcher that cuts 96-frame patches from it."""
