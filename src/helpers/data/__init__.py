"""Datasets and the one input contract: uint8 NHWC images, ``preprocess`` to float32 raw 0-255.

``from helpers import data`` is the dataset API of ``helpers.data.datasets``; ``text_slice`` holds the
text slices MiniLM's activation statistics read.
"""

from helpers.data.datasets import (
    CIFAR_FILES,
    DATASETS,
    DEFAULT_SAMPLES_PER_CLASS,
    DIGITS_TEST_FRACTION,
    VAL_SOURCES,
    Dataset,
    check_cifar10_dir,
    check_images,
    check_params,
    describe_inputs,
    eval_splits,
    load_dataset,
    load_splits,
    make_splits,
    preprocess,
    print_slice_summary,
    sample_grid_figure,
    slice_hash,
    slice_record,
    split_data,
    split_table,
    split_train_val,
    stratified_slice,
    verify_distribution,
)

__all__ = [
    "CIFAR_FILES",
    "DATASETS",
    "DEFAULT_SAMPLES_PER_CLASS",
    "DIGITS_TEST_FRACTION",
    "VAL_SOURCES",
    "Dataset",
    "check_cifar10_dir",
    "check_images",
    "check_params",
    "describe_inputs",
    "eval_splits",
    "load_dataset",
    "load_splits",
    "make_splits",
    "preprocess",
    "print_slice_summary",
    "sample_grid_figure",
    "slice_hash",
    "slice_record",
    "split_data",
    "split_table",
    "split_train_val",
    "stratified_slice",
    "verify_distribution",
]
