"""`flowtrace models`: the adapters and what each reads."""

from __future__ import annotations


def models() -> None:
    """List the adapters: what each reads, what it needs, its frames and prompt template."""
    from flowtrace.cli.common import flag_of
    from flowtrace.cli.settings import say_flags
    from flowtrace.models import ADAPTERS

    for name, cls in ADAPTERS.items():
        print(f"{name}: {cls.summary}")
        print(
            f"    model_type: {', '.join(cls.model_types)}; frames: {cls.default_frames}; "
            f"template: {cls.template.name}"
        )
        if cls.needs:
            print(f"    needs: {say_flags(cls.needs, flag_of)}")
    print(
        "The adapter is picked from the checkpoint's config.json; --adapter NAME forces one. "
        "docs/models.md has the details."
    )
