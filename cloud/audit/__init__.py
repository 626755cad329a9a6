"""The tamper-evident audit trail (issue 15 item 1; docs/audit.md).

Routers record a change with ``db.run(audit.wrap(entry, store_fn, before=...), *args)`` so the
row commits with the change; ``audit.record`` stores a standalone event (a failed login, an
export). ``cloud.audit.context.AuditCtx`` is the request dependency that says who and from
where.
"""

from __future__ import annotations

from cloud.audit.chain import Entry
from cloud.audit.store import append, record, wrap

__all__ = ["Entry", "append", "record", "wrap"]
