"""Data: MVTec AD and plain-folder sample lists, the embedded demo set, image loading."""

from dfmx.data.dataset import ImageDataset, default_num_workers, make_loader
from dfmx.data.demo import (
    DEMO_CATEGORY,
    DEMO_DEFECTS,
    demo_root,
    generate_demo,
)
from dfmx.data.images import ImageLoadError, image_to_tensor, load_image, load_mask
from dfmx.data.samples import (
    IMAGE_EXTENSIONS,
    NORMAL_TYPE,
    Sample,
    folder_samples,
    folder_split,
    list_images,
    mvtec_samples,
)
from dfmx.data.validation import (
    Skipped,
    check_image,
    validate_samples,
    validate_split,
    write_skipped_csv,
)

__all__ = [
    "DEMO_CATEGORY",
    "DEMO_DEFECTS",
    "IMAGE_EXTENSIONS",
    "NORMAL_TYPE",
    "ImageDataset",
    "ImageLoadError",
    "Sample",
    "Skipped",
    "check_image",
    "default_num_workers",
    "demo_root",
    "folder_samples",
    "folder_split",
    "generate_demo",
    "image_to_tensor",
    "list_images",
    "load_image",
    "load_mask",
    "make_loader",
    "mvtec_samples",
    "validate_samples",
    "validate_split",
    "write_skipped_csv",
]
