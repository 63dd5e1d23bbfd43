"""MNIST from its mirrors to arrays: fetch and verify the files (:mod:`~pipeline.data.fetch`),
parse IDX (:mod:`~pipeline.data.idx`), split and scale (:mod:`~pipeline.data.mnist`), and load
the preprocessed split for training (:mod:`~pipeline.data.dataset`)."""
