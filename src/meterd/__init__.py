"""meterd: a self-hosted usage-metering server that speaks Stripe's Billing Meters API."""

__version__ = "0.1.0"
