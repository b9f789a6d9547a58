"""Policy values: what the configuration says, as immutable data.

``relist.config`` reads ``conf/relist.toml`` and builds these once at start-up; steps
receive them through the ``Context`` and never read a configuration file or a global.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

__all__ = ["LIST_HEADER_NAMES", "ListPolicy", "RelayPolicy", "list_id_for"]

# The RFC 2369/2919/8058 fields the list-headers step writes (and the configuration
# refuses in a list's extra headers).
LIST_HEADER_NAMES = ("List-Id", "List-Help", "List-Unsubscribe", "List-Subscribe", "List-Post",
                     "List-Owner", "List-Archive", "List-Unsubscribe-Post")


def list_id_for(address: str) -> str:
    """Mailman's List-Id for a list address: ``name@example.org`` -> ``name.example.org``."""
    return address.replace("@", ".", 1).lower()


@dataclass(frozen=True, slots=True)
class ListPolicy:
    """Settings for one list (a ``[lists."ADDRESS"]`` section over ``[list_defaults]``)."""

    address: str = ""
    configured: bool = False   # True when the list has its own section

    # -- what the list does to a post (transformations) --------------------------
    mode: str = "resign"                 # "preserve" | "resign" | "auto"
    strip: str = "broken"                # poster signatures removed: "broken" (by the final bytes) |
                                         # "all" (resign)
    display_name: str = ""               # list's name for templates; default: local part
    footer: str = ""                     # footer template; empty: no footer
    subject_prefix: str = ""             # e.g. "[{list_name}] "; empty: none
    add_sender: bool = True              # Sender: <list>-bounces@<domain>
    list_headers: str = "keep"           # "keep" Mailman's List-* fields, or "replace" them
    reply_to: str = ""                   # "" (leave), "list", or an address
    remove_headers: tuple[str, ...] = ()
    archive_url: str = ""
    unsubscribe_url: str = ""            # https URL enables RFC 8058 one-click
    help_url: str = ""
    subscribe_url: str = ""

    # -- signing (DKIM and ARC under the list's domain) --------------------------
    sign: bool = True                    # False: relist adds no DKIM-Signature (the MTA signs)
    signing_domain: str = ""             # d=; default: the list's domain
    selector: str = ""                   # RSA selector; empty: no RSA signature
    private_key: str = ""                # path to the RSA private key (PEM)
    ed25519_selector: str = ""
    ed25519_private_key: str = ""
    # key rotation (docs/keys.md): until rotation_overlap_until, the RSA key that
    # ``selector`` replaced signs too (a second rsa-sha256 signature); after it, not.
    previous_selector: str = ""
    previous_private_key: str = ""
    rotation_overlap_until: datetime | None = None   # aware (UTC); None: no overlap
    canonicalization: str = "relaxed/relaxed"
    sign_headers: tuple[str, ...] = ()   # empty: the default oversigned list
    signature_ttl: int = 0               # x= = t= + ttl seconds; 0: no x=
    signing_identity: str = ""           # i= (AUID); "": "@" + the signing domain
    copy_headers: bool = False           # z=: copies of the signed fields (diagnostics)
    arc_seal: bool = True
    dmarc_mitigation: str = "munge_from"  # "none" | "munge_from" | "wrap"
    dmarc_trigger: str = "policy"        # "policy" | "always" | "evidence"
    munge_phrase: str = "{name} via {list_name}"
    downgrade_8bit: bool = False
    # -- who may send as the list (identify) -------------------------------------
    # envelope senders accepted besides the list's Mailman addresses ("*": any run)
    envelope_senders: tuple[str, ...] = ()
    # -- bounces (ingress leg, relist.core.bounce.wiring) ---------------------------
    auth_bounces: str = "mailman"        # "mailman" | "owner": authentication bounces to LIST-owner@

    @property
    def list_id(self) -> str:
        return list_id_for(self.address)

    @property
    def name(self) -> str:
        return self.address.split("@", 1)[0]

    @property
    def bounces_address(self) -> str:
        name, _, domain = self.address.partition("@")
        return f"{name}-bounces@{domain}"

    @property
    def domain(self) -> str:
        return self.address.split("@", 1)[1] if "@" in self.address else ""

    @property
    def dkim_domain(self) -> str:
        """d= of the list's own signatures: ``signing_domain``, else the list's domain."""
        return (self.signing_domain or self.domain).lower().rstrip(".")

    def aligned_with(self, domain: str) -> bool:
        """The list's own signature (d= ``signing_domain`` or the list's domain) aligns
        with ``domain``: the same domain or a sub/parent domain of it (relaxed
        alignment, RFC 9989 §4.4.1)."""
        d = self.dkim_domain
        f = domain.lower().rstrip(".")
        return bool(d and f and (f == d or f.endswith("." + d) or d.endswith("." + f)))

    @property
    def signs(self) -> bool:
        """relist adds a DKIM signature of its own for this list's mail."""
        return self.sign and bool(self.selector or self.ed25519_selector)

    def in_rotation_overlap(self, now: datetime) -> bool:
        """True while the previous RSA key still signs: configured and ``now`` before
        ``rotation_overlap_until``."""
        return bool(self.previous_selector and self.rotation_overlap_until is not None
                    and now < self.rotation_overlap_until)


@dataclass(frozen=True, slots=True)
class RelayPolicy:
    """Global settings the core needs."""

    hostname: str = "localhost"
    authserv_id: str = "localhost"       # RFC 8601 authserv-id of relist's own results
    max_signatures: int = 10             # verify at most this many signatures per message
    min_key_bits: int = 1024             # RFC 8301 §3.2: smaller RSA keys fail
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
