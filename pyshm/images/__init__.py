"""Memory imaging: snapshots of live rings, image files (format v1), restore, schedules.

See docs/images.md for the file format.
"""

from .format import ImageHeader, ImageReader, is_image, write_image
from .restore import RestoreInfo, promote, restore, restore_capture
from .snapshot import Capture, capture, snapshot

__all__ = ["ImageHeader", "ImageReader", "is_image", "write_image", "RestoreInfo", "promote",
           "restore", "restore_capture", "Capture", "capture", "snapshot"]
