"""The ``data:`` section: which images (a torchvision dataset or your own folder/CSV), how they are split,
batched and normalized."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from dlx.config.checks import check_name, datasets
from dlx.config.section import Section, seed_fits

# Datasets that read the user's own files, and the keys only they take.
OWN_IMAGE_DATASETS = ("folder", "csv")
OWN_IMAGE_KEYS = frozenset({"path", "image_size", "channels", "resize", "on_bad_image", "test_fraction"})


class DataConfig(Section):
    dataset: str = "mnist"
    data_dir: str | None = Field(None, description="where torchvision datasets live; default $DLX_DATA_DIR or ./data")
    download: bool = True
    val_size: int | float = Field(
        5000, ge=0, description="images held out of the training set for validation; a float < 1: that fraction"
    )
    train_size: int | None = Field(None, ge=1, description="use only this many training images (quick runs)")
    test_size: int | None = Field(None, ge=1, description="use only this many test images (quick runs)")
    split_seed: int = Field(0, description="seeds the train/validation split; 64-bit")
    batch_size: int = Field(100, ge=1)
    eval_batch_size: int = Field(1000, ge=1)
    normalize: bool = Field(True, description="standardize with the dataset's mean/std; false: scale to [0, 1]")
    mean: list[float] | None = Field(None, description="per-channel mean of [0, 1] pixels; null: the dataset's own")
    std: list[float] | None = Field(None, description="per-channel std of [0, 1] pixels; null: the dataset's own")
    # Your own images (dataset: folder | csv; dlx.data.folder).
    path: str | None = Field(
        None, description="folder: an image folder (train/<class>/..., optional val/ test/); csv: a CSV of path,label"
    )
    image_size: int | None = Field(None, ge=8, le=4096, description="folder/csv: the square side images are resized to")
    channels: Literal[1, 3] | None = Field(
        None, description="folder/csv: 1 gray, 3 RGB; null: 1 when every image is gray"
    )
    resize: Literal["crop", "stretch"] = Field(
        "crop", description="folder/csv: crop = shorter side to image_size, then center crop; stretch = both sides"
    )
    on_bad_image: Literal["skip", "error"] = Field(
        "skip", description="folder/csv: an unreadable image or empty class folder is listed and skipped, or an error"
    )
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="folder/csv without a test split: this fraction of each class becomes the test set"
    )

    @field_validator("val_size")
    @classmethod
    def _val_fraction(cls, v: int | float) -> int | float:
        if isinstance(v, float) and not 0 < v < 1:
            raise ValueError(f"got {v}; a count of images (an integer) or a fraction between 0 and 1")
        return v

    @model_validator(mode="after")
    def _own_images(self) -> DataConfig:
        # One line per key, named by the key (dlx.config.messages): "x.yaml: data.path: required for ...".
        if self.dataset in OWN_IMAGE_DATASETS:
            example = {"path": "some/folder" if self.dataset == "folder" else "labels.csv", "image_size": "32"}
            problems = [f"{k}: required for dataset {self.dataset} (e.g. {example[k]})"
                        for k in ("path", "image_size") if getattr(self, k) is None]  # fmt: skip
        else:
            problems = [f"{k}: only for dataset folder or csv (your own images), not {self.dataset}"
                        for k in sorted(OWN_IMAGE_KEYS)
                        if getattr(self, k) != type(self).model_fields[k].default]  # fmt: skip
        if problems:
            raise ValueError(" | ".join(problems))
        return self

    @field_validator("std")
    @classmethod
    def _std_positive(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and not all(s > 0 for s in v):
            raise ValueError(f"got {v}; every std must be > 0")
        return v

    @model_validator(mode="after")
    def _mean_std_together(self) -> DataConfig:
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std: give both or neither")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values and std {len(self.std)}: one per channel each")
        return self

    @field_validator("dataset")
    @classmethod
    def _dataset_known(cls, v: str) -> str:
        return check_name("dataset", datasets, v)

    @field_validator("split_seed")
    @classmethod
    def _split_seed_fits(cls, v: int) -> int:
        return seed_fits(v)
