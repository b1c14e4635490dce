"""Beyond one process: samples over Ray actors (`ray_executor`); traces on a server are the
engine's (`flowtrace.engine.remote`).

docs/scale.md says when to use which. Ray is an optional extra (`pip install flowtrace[ray]`):
only `ray_executor` imports it, and only when `executor=ray` asks for it.
"""
