"""ISO 4217 currency codes in current use (the list maintained by SIX, 2024 edition)."""

from decimal import ROUND_HALF_UP, Decimal

ISO_4217_CODES = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV
    BRL BSD BTN BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK
    DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL
    HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT
    LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR
    MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF
    SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND
    TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XAG
    XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XTS XUA XXX YER ZAR ZMW ZWG
    ZWL
    """.split()  # noqa: SIM905 (a compact table)
)

ZERO = Decimal(0)

CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


def money(amount: Decimal, currency: str, places: int = 0) -> str:
    """An amount rounded for display, with thousands separators and its currency."""
    rounded = amount.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)
    sign = "−" if rounded < 0 else ""
    symbol = CURRENCY_SYMBOLS.get(currency)
    if symbol:
        return f"{sign}{symbol}{abs(rounded):,}"
    return f"{sign}{abs(rounded):,} {currency}"


def validate_currency_code(value: str) -> None:
    from django.core.exceptions import ValidationError

    if value not in ISO_4217_CODES:
        raise ValidationError(
            "%(value)s is not an ISO 4217 currency code.", params={"value": value}
        )
