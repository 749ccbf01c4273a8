"""The currencies Stripe supports, and how many decimal places each one's minor unit has."""

from __future__ import annotations

from meterd.errors import InvalidRequestError


def _codes(text: str) -> frozenset[str]:
    return frozenset(text.split())


SUPPORTED = _codes(
    """
    usd aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob brl bsd
    bwp byn bzd cad cdf chf clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd fkp gbp
    gel gip gmd gnf gtq gyd hkd hnl htg huf idr ils inr isk jmd jod jpy kes kgs khr kmf krw
    kwd kyd kzt lak lbp lkr lrd lsl mad mdl mga mkd mmk mnt mop mur mvr mwk mxn myr mzn nad
    ngn nio nok npr nzd omr pab pen pgk php pkr pln pyg qar ron rsd rub rwf sar sbd scr sek
    sgd shp sle sos srd std szl thb tjs tnd top try ttd twd tzs uah ugx uyu uzs vnd vuv wst
    xaf xcd xof xpf yer zar zmw
    """
)

ZERO_DECIMAL = _codes(
    """
    bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf
    """
)
THREE_DECIMAL = _codes(
    """
    bhd jod kwd omr tnd
    """
)


def checked(currency: str, param: str = "currency") -> str:
    """The ISO code in lowercase, as Stripe stores it; 400 naming ``param`` if unsupported."""
    code = currency.lower()
    if code not in SUPPORTED:
        raise InvalidRequestError(
            f"Invalid currency: {currency}. Stripe currently supports these currencies: "
            + ", ".join(sorted(SUPPORTED)),
            param=param,
        )
    return code


def minor_unit_digits(currency: str) -> int:
    """Digits after the decimal point of the major unit: 2 for usd (cents), 0 for jpy."""
    if currency in ZERO_DECIMAL:
        return 0
    if currency in THREE_DECIMAL:
        return 3
    return 2
