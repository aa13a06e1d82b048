from decimal import Decimal


def amount_display(
    amount: Decimal | None, currency: str = "", places: int = 2
) -> str | None:
    """Thousands separators and a fixed number of places; tiny non-zero amounts (API
    tokens) keep enough digits not to read as zero."""
    if amount is None:
        return None  # the admin shows its empty value
    if amount and abs(amount) < Decimal("0.01"):
        text = f"{amount:,.6f}"
    else:
        text = f"{amount:,.{places}f}"
    return f"{text} {currency}".strip()
