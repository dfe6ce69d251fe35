"""The web app's helpers: what web.py's thin endpoints call.

`http`: the error envelope, body limits, JSON parsing and the correlation id.
`deliveries`: webhook authenticity and de-duplication, shared by every provider.
`apify`, `validator`: one provider's delivery each, applied inside the caller's transaction.
`trigger`: POST /webhooks/trigger/{workflow}. `status`: GET /webhooks/status.
"""
