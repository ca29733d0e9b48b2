"""What a request to the pyfunc model holds: image files named by path, or image bytes.

A request is a DataFrame with a ``path`` column (files on the scoring machine's disk) or
an ``image`` column (the image file's bytes: ``bytes`` from Python, base64 text over HTTP,
which MLflow's scoring server decodes from the model's ``binary`` column type; base64
``str`` values are decoded here too). A row uses one of the two; rows of one request may
mix them. Each image is checked before any is scored, so a bad row refuses the whole
request with one message naming the row:

* more than :data:`MAX_BATCH` rows, or none;
* bytes over :data:`MAX_IMAGE_BYTES`, or an image over :data:`MAX_IMAGE_PIXELS` pixels
  (read from the header, nothing decoded);
* bytes or a file that PIL cannot open as an image; a path that is not a file.

An image whose header is sound but whose body cannot be decoded (a truncated file) is
found while scoring; :func:`undecodable` names its row in the same way.

Image bytes are written to files in a temporary folder and scored from there, so a sent
image is decoded by the same code as the same file given to ``dfmx-predict``.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from PIL import Image

from dfmx.errors import UserError

if TYPE_CHECKING:
    from dfmx.data.images import ImageLoadError

__all__ = [
    "IMAGE_COLUMN",
    "MAX_BATCH",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "PATH_COLUMN",
    "BadRequest",
    "RequestImage",
    "image_files",
    "request_images",
    "undecodable",
]

PATH_COLUMN = "path"
IMAGE_COLUMN = "image"
#: Images per request.
MAX_BATCH = 64
#: Bytes of one sent image (its file, before base64).
MAX_IMAGE_BYTES = 32 * 1024 * 1024
#: Pixels (width x height) of one image, as its header declares them.
MAX_IMAGE_PIXELS = 8192 * 8192

_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}


class BadRequest(UserError, ValueError):
    """A request the model refuses; the message says why in one line."""


@dataclass(frozen=True)
class RequestImage:
    """One row of a request: ``path`` (as sent; empty for bytes) and ``data`` (bytes or
    ``None`` for a path)."""

    path: str
    data: bytes | None


def _missing(value: Any) -> bool:
    if value is None:
        return True
    return isinstance(value, float) and math.isnan(value)


def _as_bytes(value: Any, row: int) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            text = "".join(value.split())  # MIME base64 is wrapped in lines
            try:
                return base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest(
                    f"row {row}: the '{IMAGE_COLUMN}' value is not base64 text"
                ) from None
    raise BadRequest(
        f"row {row}: the '{IMAGE_COLUMN}' value is a {type(value).__name__}, "
        "not image bytes or base64 text"
    )


def request_images(model_input: Any) -> list[RequestImage]:
    """The rows of a request (see the module docstring).

    Raises:
        BadRequest: no ``path`` or ``image`` column, no rows, too many rows, a row with
            neither or both.
    """
    if isinstance(model_input, (str, Path)):
        model_input = pd.DataFrame({PATH_COLUMN: [str(model_input)]})
    elif isinstance(model_input, (list, tuple)) and all(
        isinstance(v, (str, Path)) for v in model_input
    ):
        model_input = pd.DataFrame({PATH_COLUMN: [str(v) for v in model_input]})
    if not isinstance(model_input, pd.DataFrame):
        raise BadRequest(
            f"a request is a table with a '{PATH_COLUMN}' or an '{IMAGE_COLUMN}' column; "
            f"got a {type(model_input).__name__}"
        )
    columns = [c for c in (PATH_COLUMN, IMAGE_COLUMN) if c in model_input.columns]
    if not columns or len(model_input) == 0:
        raise BadRequest(
            f"the request holds no images: send rows with a '{PATH_COLUMN}' column (files "
            f"on the server) or an '{IMAGE_COLUMN}' column (base64 image bytes); other "
            "columns are ignored"
        )
    if len(model_input) > MAX_BATCH:
        raise BadRequest(
            f"the request holds {len(model_input)} images; at most {MAX_BATCH} per request"
        )
    rows = []
    for row, (_, record) in enumerate(model_input.iterrows()):
        path = record.get(PATH_COLUMN)
        data = record.get(IMAGE_COLUMN)
        has_path, has_data = not _missing(path), not _missing(data)
        if has_path == has_data:
            raise BadRequest(
                f"row {row}: give either '{PATH_COLUMN}' or '{IMAGE_COLUMN}'"
                + (", not both" if has_path else "")
            )
        if has_path:
            rows.append(RequestImage(path=str(path), data=None))
        else:
            rows.append(RequestImage(path="", data=_as_bytes(data, row)))
    return rows


def _check_image(source: Any, what: str) -> str:
    """PIL's format name of the image at ``source`` (a path or a byte stream), its header
    checked against :data:`MAX_IMAGE_PIXELS`."""
    try:
        with Image.open(source) as img:
            width, height = img.size
            kind = str(img.format)
    except Image.DecompressionBombError:
        raise BadRequest(f"{what} is too large: over {MAX_IMAGE_PIXELS} pixels") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadRequest(f"{what} is not an image ({type(exc).__name__})") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise BadRequest(
            f"{what} is too large: {width}x{height} pixels; at most {MAX_IMAGE_PIXELS} pixels"
        )
    return kind


@contextmanager
def image_files(rows: list[RequestImage]) -> Iterator[list[str]]:
    """Checked image files for ``rows``, in order: sent bytes written to a temporary
    folder (removed on exit), paths as sent.

    Raises:
        BadRequest: a row is not an image, is too large, or names no file.
    """
    with tempfile.TemporaryDirectory(prefix="dfmx-request-") as folder:
        files = []
        for row, item in enumerate(rows):
            if item.data is None:
                what = f"row {row}: {item.path}"
                if not Path(item.path).is_file():
                    raise BadRequest(f"{what}: no such file on the server")
                _check_image(item.path, what)
                files.append(item.path)
                continue
            what = f"row {row}: the '{IMAGE_COLUMN}' value"
            if len(item.data) > MAX_IMAGE_BYTES:
                raise BadRequest(
                    f"{what} is too large: {len(item.data)} bytes; at most {MAX_IMAGE_BYTES}"
                )
            if not item.data:
                raise BadRequest(f"{what} is empty")
            kind = _check_image(io.BytesIO(item.data), what)
            file = Path(folder) / f"{row:03d}{_SUFFIXES.get(kind, '.img')}"
            file.write_bytes(item.data)
            files.append(str(file))
        yield files


def undecodable(error: ImageLoadError, rows: list[RequestImage],
                files: list[str]) -> BadRequest:
    """The refusal for an image the decoder could not read (``error``, whose ``path`` is
    one of ``files``, the :func:`image_files` of ``rows``): it names the row, and the path
    as sent for a ``path`` row, not the temporary file; the decoder's reason follows."""
    if error.path is None:
        return BadRequest(str(error))
    reason = str(error.__cause__) if error.__cause__ is not None else str(error)
    target = Path(error.path)
    for row, (item, file) in enumerate(zip(rows, files, strict=True)):
        if Path(file) == target:
            what = f"row {row}: {item.path}" if item.data is None else (
                f"row {row}: the '{IMAGE_COLUMN}' value")
            return BadRequest(f"{what} cannot be decoded ({reason})")
    return BadRequest(str(error))
