"""One module per kind of billing source; `importer_for` picks one by name or content.

Every kind that can be imported from a file is here, under its BillingSource kind, so
that a file import and a sync of the same kind of source make the same rows.
"""

from pathlib import Path

from billing.importers.anthropic_costs import AnthropicCostsImporter
from billing.importers.aws_cur import AwsCurImporter
from billing.importers.azure import AzureCostDetailsImporter
from billing.importers.base import CsvFile, Importer, ImportFailure
from billing.importers.focus import FocusImporter
from billing.importers.gcp_billing import GcpBillingImporter
from billing.importers.invoice_csv import InvoiceCsvImporter
from billing.importers.json_file import JsonFile
from billing.importers.openai_costs import OpenAICostsImporter
from billing.importers.parquet import ParquetExport, is_parquet
from core.currencies import ISO_4217_CODES

IMPORTERS: dict[str, type[Importer]] = {
    FocusImporter.name: FocusImporter,
    AzureCostDetailsImporter.name: AzureCostDetailsImporter,
    InvoiceCsvImporter.name: InvoiceCsvImporter,
    AwsCurImporter.name: AwsCurImporter,
    GcpBillingImporter.name: GcpBillingImporter,
    OpenAICostsImporter.name: OpenAICostsImporter,
    AnthropicCostsImporter.name: AnthropicCostsImporter,
}


def importer_for(
    path: Path, file_format: str = "auto", *, currency: str | None = None
) -> Importer:
    """The importer of the file: the format named, or the one its header (CSV,
    Parquet) or its first JSON object's keys (NDJSON, saved API pages) show.

    `currency` is the ISO 4217 currency of a FOCUS file without its BillingCurrency
    column; every other format names its currency on every row."""
    importer = IMPORTERS.get(file_format) if file_format != "auto" else _detected(path)
    if importer is None:
        known = ", ".join(sorted(IMPORTERS))
        raise ImportFailure(
            f"format {file_format!r} is not supported yet (supported: {known})"
        )
    if importer is FocusImporter:
        return FocusImporter(currency=_checked_currency(currency, path))
    if currency is not None:
        raise ImportFailure(
            f"is a {importer.name} export, which names the currency of every row: "
            "a currency is only given for FOCUS files without BillingCurrency",
            file=path.name,
        )
    return importer()


def _detected(path: Path) -> type[Importer]:
    header = _header(path)
    if not header:
        raise ImportFailure("the file is empty", file=path.name)
    for importer in IMPORTERS.values():
        if importer.accepts(header):
            return importer
    raise ImportFailure(
        "the format could not be detected from the header: choose its format",
        file=path.name,
    )


def _header(path: Path) -> list[str]:
    """The column names of a CSV or Parquet file, the keys of a JSON file's first
    object."""
    if is_parquet(path):
        return ParquetExport(path).header()
    json_file = JsonFile(path)
    if json_file.is_json():
        return json_file.first_keys()
    return CsvFile(path).header()


def _checked_currency(currency: str | None, path: Path) -> str | None:
    if currency is None:
        return None
    code = currency.strip().upper()
    if code not in ISO_4217_CODES:
        raise ImportFailure(
            f"the currency given, {currency[:40]!r}, is not an ISO 4217 currency code",
            file=path.name,
        )
    return code


__all__ = ["IMPORTERS", "ImportFailure", "importer_for"]
