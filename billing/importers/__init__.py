"""One module per kind of billing source; `importer_for` picks one by name or header."""

from pathlib import Path

from billing.importers.aws_cur import AwsCurImporter
from billing.importers.azure import AzureCostDetailsImporter
from billing.importers.base import CsvFile, Importer, ImportFailure
from billing.importers.focus import FocusImporter
from billing.importers.invoice_csv import InvoiceCsvImporter
from billing.importers.parquet import ParquetExport, is_parquet

IMPORTERS: dict[str, type[Importer]] = {
    FocusImporter.name: FocusImporter,
    AzureCostDetailsImporter.name: AzureCostDetailsImporter,
    InvoiceCsvImporter.name: InvoiceCsvImporter,
    AwsCurImporter.name: AwsCurImporter,
}


def importer_for(path: Path, file_format: str = "auto") -> Importer:
    if file_format != "auto":
        try:
            return IMPORTERS[file_format]()
        except KeyError:
            known = ", ".join(sorted(IMPORTERS))
            raise ImportFailure(
                f"format {file_format!r} is not supported yet (supported: {known})"
            ) from None
    header = (
        ParquetExport(path).header() if is_parquet(path) else CsvFile(path).header()
    )
    if not header:
        raise ImportFailure("the file is empty", file=path.name)
    for importer in IMPORTERS.values():
        if importer.accepts(header):
            return importer()
    raise ImportFailure(
        "the format could not be detected from the header; pass --format",
        file=path.name,
    )


__all__ = ["IMPORTERS", "ImportFailure", "importer_for"]
