"""A DNS server on 127.0.0.1 over UDP that answers TXT queries from a table.

``zone`` maps a name to what the server does for it:

* a list of records, each a string or a list of strings (a TXT record split into
  several character-strings, as long DKIM keys are published);
* ``"NXDOMAIN"``, ``"SERVFAIL"``, or ``"TIMEOUT"`` (no answer at all).

A name not in the table is NXDOMAIN; a known name asked for another type is NODATA.
Answers carry ``ttl`` and an SOA in the authority section for negative answers.
"""

from __future__ import annotations

import asyncio

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from relist.sandbox.loop import LoopThread

__all__ = ["DNSServer", "split_txt"]


def split_txt(value: str, size: int = 255) -> list[str]:
    """Split a long TXT value into character-strings of at most ``size`` bytes."""
    return [value[i:i + size] for i in range(0, len(value), size)] or [""]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer):
        self.server = server

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        reply = self.server.respond(data)
        if reply is not None:
            self.transport.sendto(reply, addr)


class DNSServer:
    def __init__(self, zone: dict[str, object] | None = None, ttl: int = 300):
        self.zone = {k.lower().rstrip("."): v for k, v in (zone or {}).items()}
        self.ttl = ttl
        self.queries: list[str] = []
        self._thread: LoopThread | None = None
        self._transport = None

    def set(self, name: str, value) -> None:
        self.zone[name.lower().rstrip(".")] = value

    def respond(self, wire: bytes) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # noqa: BLE001 - garbage in: no answer, as a real server
            return None
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        self.queries.append(name)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        entry = self.zone.get(name, "NXDOMAIN")
        if entry == "TIMEOUT":
            return None
        if entry == "SERVFAIL":
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        if entry == "NXDOMAIN":
            response.set_rcode(dns.rcode.NXDOMAIN)
            self._add_soa(response, question.name)
            return response.to_wire()
        if question.rdtype != dns.rdatatype.TXT:
            self._add_soa(response, question.name)  # NODATA
            return response.to_wire()
        records = entry if isinstance(entry, list) else [entry]
        texts = []
        for rec in records:
            strings = rec if isinstance(rec, list) else split_txt(rec)
            texts.append(" ".join('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in strings))
        if texts:
            response.answer.append(dns.rrset.from_text_list(question.name, self.ttl, "IN", "TXT", texts))
        else:
            self._add_soa(response, question.name)
        return response.to_wire()

    def _add_soa(self, response, qname) -> None:
        zone = dns.name.from_text("test.") if len(qname) < 2 else qname.parent()
        response.authority.append(dns.rrset.from_text(
            zone, self.ttl, "IN", "SOA", f"ns.{zone} hostmaster.{zone} 1 3600 600 86400 {self.ttl}"))

    def start(self, host: str = "127.0.0.1", port: int = 0) -> DNSServer:
        self._thread = LoopThread("dns")
        loop = self._thread.loop

        async def create():
            transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self),
                                                               local_addr=(host, port))
            return transport
        self._transport = self._thread.call(create())
        return self

    @property
    def address(self) -> tuple[str, int]:
        return self._transport.get_extra_info("sockname")[:2]

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def nameserver(self) -> str:
        host, port = self.address
        return f"{host}:{port}"

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.loop.call_soon_threadsafe(self._transport.close)
            self._thread.close()
            self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
