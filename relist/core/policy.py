"""Policy values: what the configuration says, as immutable data.

``relist.config`` reads ``conf/relist.toml`` and builds these once at start-up; steps
receive them through the ``Context`` and never read a configuration file or a global.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

__all__ = ["ListPolicy", "RelayPolicy", "list_id_for"]


def list_id_for(address: str) -> str:
    """Mailman's List-Id for a list address: ``name@example.org`` -> ``name.example.org``."""
    return address.replace("@", ".", 1).lower()


@dataclass(frozen=True, slots=True)
class ListPolicy:
    """Settings for one list (a ``[lists."ADDRESS"]`` section over ``[list_defaults]``)."""

    address: str = ""
    configured: bool = False   # True when the list has its own section

    @property
    def list_id(self) -> str:
        return list_id_for(self.address)

    @property
    def name(self) -> str:
        return self.address.split("@", 1)[0]

    @property
    def domain(self) -> str:
        return self.address.split("@", 1)[1] if "@" in self.address else ""


@dataclass(frozen=True, slots=True)
class RelayPolicy:
    """Global settings the core needs."""

    hostname: str = "localhost"
    add_received: bool = True
    unknown_list: str = "pass"          # "pass" | "defer" | "reject"
    defaults: ListPolicy = field(default_factory=ListPolicy)
    lists: tuple[ListPolicy, ...] = ()

    def list_for_address(self, address: str) -> ListPolicy:
        address = address.lower()
        for lp in self.lists:
            if lp.address == address:
                return lp
        return replace(self.defaults, address=address, configured=False)

    def list_for_id(self, list_id: str) -> ListPolicy | None:
        """The configured list whose List-Id is ``list_id``, if any."""
        list_id = list_id.lower()
        for lp in self.lists:
            if lp.list_id == list_id:
                return lp
        return None
