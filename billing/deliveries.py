"""A delivery: the files of one export that are imported together, in one transaction.

Providers split a large month into several files (AWS CUR numbered parts, Azure
partitioned exports, split FOCUS exports). Imported one at a time, each file would
replace the billing periods it touches and so delete the others' rows: imported as one
delivery, the periods are replaced once, with the rows of every file.

A delivery is given as files, folders (their export files, not their subfolders) and
zip archives (their export files at any depth), in any mix. Manifests are left out:
the files beside them are the data. Its checksum does not depend on the order of the
files or on how they were given (files, a folder or a zip), so the same delivery again
is recognised as such.
"""

import hashlib
import re
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from billing.importers.base import (
    ImportFailure,
    max_decompressed_bytes,
    too_large_decompressed,
)

# What a provider's export file is called; anything else in a folder or zip is not.
EXPORT_SUFFIXES = (".csv", ".gz", ".parquet", ".json", ".jsonl", ".ndjson")
MANIFEST = re.compile(r"(^|-)manifest\.json$", re.IGNORECASE)
# The longest file_name an ImportRun keeps.
LABEL_CHARS = 500
# Billing text deflates about 10 to 1: a member that claims over 200 to 1 (past a
# megabyte, where ratios mean something) is a zip bomb, not an export.
MAX_ZIP_RATIO = 200
ZIP_RATIO_FROM_BYTES = 1 << 20


@dataclass(frozen=True)
class DeliveryFile:
    path: Path  # where it is read from (a zip's member: extracted to a temporary file)
    name: str  # as the person importing knows it
    sha256: str


@dataclass(frozen=True)
class Delivery:
    files: list[DeliveryFile]

    @property
    def paths(self) -> list[Path]:
        return [file.path for file in self.files]

    @property
    def checksum(self) -> str:
        """One file's SHA-256, or a SHA-256 of the files' sorted SHA-256s."""
        digests = sorted(file.sha256 for file in self.files)
        if len(digests) == 1:
            return digests[0]
        return hashlib.sha256("\n".join(digests).encode()).hexdigest()

    def as_json(self) -> list[dict[str, str]]:
        return [{"name": file.name, "sha256": file.sha256} for file in self.files]


@contextmanager
def delivery_open(
    paths: list[Path], *, names: list[str] | None = None
) -> Iterator[Delivery]:
    """The delivery's files, zip archives extracted to a temporary folder that is
    removed on leaving. Refuses a path that does not exist, a folder or zip without
    export files, and a file given twice.

    `names` are what the paths are called by the person importing, where it is not
    the path's own name (an upload, renamed by storage): each such file is read
    through a link of that name, so every message names it as its owner knows it. An
    empty name is a zip of loose files (several uploaded): its members are named
    alone."""
    with tempfile.TemporaryDirectory(prefix="spendtracker-delivery-") as scratch:
        files: list[DeliveryFile] = []
        for path, name in zip(paths, names or [None] * len(paths), strict=True):
            if name:
                path = _named_link(path, name, Path(scratch))
            if path.is_dir():
                files += _folder_files(path)
            elif zipfile.is_zipfile(path):
                files += _zip_files(path, Path(scratch), loose=name == "")
            elif path.is_file():
                files.append(_delivery_file(path, path.name))
            else:
                raise ImportFailure("no such file or folder", file=str(path))
        _refuse_repeats(files)
        yield Delivery(files)


def delivery_label(names: list[str]) -> str:
    """What the import history calls a delivery: its file, folder or zip names."""
    label = ", ".join(names)
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def is_export_file(name: str) -> bool:
    base = PurePosixPath(name).name
    return (
        base.lower().endswith(EXPORT_SUFFIXES)
        and not base.startswith((".", "_"))  # macOS resource forks, job markers
        and not MANIFEST.search(base)
    )


def _folder_files(folder: Path) -> list[DeliveryFile]:
    paths = sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and is_export_file(path.name)
    )
    if not paths:
        raise _no_exports(folder.name)
    return [_delivery_file(path, f"{folder.name}/{path.name}") for path in paths]


def _named_link(path: Path, name: str, scratch: Path) -> Path:
    """`path` as `name`: a link in a folder of its own, so that names never clash."""
    if not path.exists():
        raise ImportFailure("the uploaded file is missing from storage", file=name)
    link = Path(tempfile.mkdtemp(dir=scratch)) / PurePosixPath(name).name
    link.symlink_to(path.resolve())
    return link


def _zip_files(
    archive: Path, scratch: Path, *, loose: bool = False
) -> list[DeliveryFile]:
    files = []
    with zipfile.ZipFile(archive) as opened:
        members = [
            member
            for member in opened.infolist()
            if not member.is_dir()
            and is_export_file(member.filename)
            and "__MACOSX" not in member.filename
        ]
        if not members:
            raise _no_exports(archive.name)
        folder = Path(tempfile.mkdtemp(dir=scratch))
        for member in sorted(members, key=lambda member: member.filename):
            name = member.filename if loose else f"{archive.name}/{member.filename}"
            _zip_member_check(member, name)
            try:
                # ZipFile.extract keeps the path inside `folder` (no "..", no root).
                path = Path(opened.extract(member, folder))
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise ImportFailure(f"cannot be extracted ({exc})", file=name) from exc
            files.append(_delivery_file(path, name))
    return files


def _zip_member_check(member: zipfile.ZipInfo, name: str) -> None:
    """Refuse a member before it is extracted: its declared size bounds what
    extracting it writes (zipfile stops there, and a CRC catches a lie)."""
    if member.file_size > max_decompressed_bytes():
        raise too_large_decompressed(name)
    ratio = member.file_size / max(member.compress_size, 1)
    if member.file_size > ZIP_RATIO_FROM_BYTES and ratio > MAX_ZIP_RATIO:
        raise ImportFailure(
            f"expands {ratio:,.0f} times, over the {MAX_ZIP_RATIO} times a billing "
            "export does: this zip is not an export",
            file=name,
        )


def _no_exports(name: str) -> ImportFailure:
    return ImportFailure(
        f"holds no export files (files ending {', '.join(EXPORT_SUFFIXES)}; "
        "manifests are left out)",
        file=name,
    )


def _refuse_repeats(files: list[DeliveryFile]) -> None:
    """The same file twice would count its rows twice."""
    seen: dict[str, str] = {}
    for file in files:
        if file.sha256 in seen:
            raise ImportFailure(
                f"is the same file as {seen[file.sha256]}: a delivery takes each "
                "file once",
                file=file.name,
            )
        seen[file.sha256] = file.name


def _delivery_file(path: Path, name: str) -> DeliveryFile:
    return DeliveryFile(path=path, name=name, sha256=file_sha256(path))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
