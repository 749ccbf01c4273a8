"""Stripe's wire protocol: params, auth, errors, pagination, idempotency; a module a resource."""
