"""The real Mailman 3 corpus (``fixtures/mailman``) through relist over SMTP, every
message the sink receives checked by verifiers we did not write: Perl Mail::DKIM
(DKIM, and ``Mail::DKIM::ARC::Verifier`` for the chain, keys from a loopback DNS
server through Net::DNS) and OpenDKIM's test mode (``opendkim -t``, keys from
``TestDNSData``).

Once per module: list keys for ``lists.example.org`` are generated here (RSA-2048
and Ed25519, key files mode 0600), published with the corpus's ``dns.json`` on a
loopback ``DNSServer``, and relist replays all corpus transactions, with every
list of ``lists.json`` in ``resign`` mode, then in ``preserve`` mode (both with a
footer, a subject prefix, the ARC seal and both keys).  A third replay,
``preserve+ingress``, runs relist with its ingress leg: every case's ``post.eml`` is
first delivered over LMTP to relist's ingress port (on to a stand-in Mailman), then
the corpus transactions are replayed with every list in ``preserve`` mode and no
decorations of relist's own (the "undecorated list" of the ingress promise).  Then two
perl processes and one opendkim run (over many files each) verify everything: the
sink's messages, the corpus input as it arrived, the posts as they reached the
ingress, and tampered copies of every sink message (negative controls: each verdict
must be able to say "fail").

OpenDKIM reports one signature per message, so it gets one file per signature: the
message with every *other* DKIM-Signature field removed.  No signature here covers
DKIM-Signature fields (relist's h= and the posters' never name it), so removing the
others leaves each signature's input unchanged.
"""

from __future__ import annotations

import json
import re
import shutil
import smtplib
import sqlite3
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from relist.core.sign import dns_record
from relist.demo import Transaction, load_corpus, load_posts, send_ingress
from relist.edge.key_files import generate, write_private_key
from relist.sandbox.dnsserver import DNSServer
from relist.sandbox.sink import Sink
from relist.server import ThreadedServer
from tests.helpers import FIXTURES, make_config
from tests.helpers import needs_opendkim
from tests.helpers import needs_ed25519, needs_mail_dkim

CORPUS = FIXTURES / "mailman"
DOMAIN = "lists.example.org"
SELECTORS = {"rsa": "rsa-sha256", "ed": "ed25519-sha256"}
MODES = ("resign", "preserve")
# The third replay: preserve mode, undecorated lists, the ingress leg in front of Mailman.
INGRESS = "preserve+ingress"
REPLAYS = (*MODES, INGRESS)

pytestmark = pytest.mark.skipif(not (CORPUS / "cases").is_dir(),
                                reason=f"Mailman corpus absent ({CORPUS}): run fixtures/mailman/capture.py")

# Many files per process.  Each line in: a path; each line out: one JSON object.
# Line ends are normalised to CRLF as in tests/test_interop_sign.py's PERL.
PERL_BATCH = r"""
use strict; use Net::DNS::Resolver; use Mail::DKIM::Verifier; use Mail::DKIM::ARC::Verifier; use JSON::PP;
my $port = shift @ARGV;
Mail::DKIM::DNS::resolver(Net::DNS::Resolver->new(nameservers => ['127.0.0.1'], port => $port,
    recurse => 1, udp_timeout => 5, tcp_timeout => 5, retry => 1));
# Remember each answer (records and rcode) for the process: the same few keys are asked
# hundreds of times, and a loopback round trip costs more than a verification.
{ no warnings 'redefine'; my $query = \&Mail::DKIM::DNS::query; my %answers;
  *Mail::DKIM::DNS::query = sub { my $key = lc "$_[0]/$_[1]";
      $answers{$key} //= do { my @rr = $query->(@_); [$@, @rr] };   # errors die: not kept
      my ($rcode, @rr) = @{$answers{$key}}; $@ = $rcode; return @rr; }; }
my $json = JSON::PP->new->canonical;
sub feed { my ($v, $file) = @_; open(my $fh, '<', $file) or die "$file: $!"; binmode $fh;
    while (<$fh>) { s/\r?\n\z/\015\012/; $v->PRINT($_); } close $fh; $v->CLOSE; }
while (my $file = <STDIN>) {
    chomp $file;
    my $v = Mail::DKIM::Verifier->new(); feed($v, $file);
    my @sigs = map { { d => $_->domain, s => $_->selector, a => $_->algorithm,
                       result => $_->result, detail => ($_->result_detail // '') } } $v->signatures;
    my $arc = Mail::DKIM::ARC::Verifier->new(); feed($arc, $file);
    print $json->encode({ file => $file, dkim => \@sigs, arc => $arc->result,
                          arc_detail => ($arc->result_detail // '') }), "\n";
}
"""


# -- a header splitter of our own (not relist's parser: the point is independence) ------

def split_fields(data: bytes) -> tuple[list[bytes], bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, "no end of header"
    fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        else:
            fields.append(line)
    return fields, body


def join_fields(fields: list[bytes], body: bytes) -> bytes:
    return b"\r\n".join(fields) + b"\r\n\r\n" + body


def tags(value: bytes) -> dict[str, str]:
    """Tag=value list (RFC 6376 §3.2) of a field's value, whitespace removed."""
    out = {}
    for part in re.sub(rb"\s+", b"", value).decode("ascii", "replace").split(";"):
        name, eq, val = part.partition("=")
        if eq:
            out.setdefault(name, val)
    return out


def dkim_fields(data: bytes) -> list[tuple[int, dict[str, str]]]:
    """(index in the field list, tags) of every DKIM-Signature, top first."""
    fields, _ = split_fields(data)
    return [(i, tags(f.split(b":", 1)[1])) for i, f in enumerate(fields)
            if f.split(b":", 1)[0].strip().lower() == b"dkim-signature"]


def sig_id(t: dict[str, str]) -> tuple[str, str, str]:
    return t.get("d", "").lower(), t.get("s", ""), t.get("a", "")


def only_signature(data: bytes, keep: int) -> bytes:
    """``data`` with every DKIM-Signature except the field at index ``keep`` removed."""
    fields, body = split_fields(data)
    drop = {i for i, _ in dkim_fields(data)} - {keep}
    return join_fields([f for i, f in enumerate(fields) if i not in drop], body)


def tamper_body(data: bytes) -> bytes:
    return data + b"tampered\r\n"


def tamper_subject(data: bytes) -> bytes:
    fields, body = split_fields(data)
    out = [f.replace(b":", b": tampered", 1) if f.lower().startswith(b"subject:") else f for f in fields]
    assert out != fields, "no Subject to tamper with"
    return join_fields(out, body)


# -- setup ---------------------------------------------------------------------------------

@dataclass(repr=False)
class Replay:
    mode: str
    names: list[str]
    inputs: list[bytes]
    outputs: list[bytes | None] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    # With the ingress leg: relist's store record of each transaction ({"steps", "facts"}).
    records: list[dict | None] = field(default_factory=list)


@dataclass(repr=False)
class Verified:
    """Everything the two verifiers said, by (tag, message index)."""

    replays: dict[str, Replay]
    # Mail::DKIM: (tag, i) -> {"dkim": [{d, s, a, result, detail}], "arc": ..., "arc_detail": ...}
    perl: dict[tuple[str, int], dict]
    # OpenDKIM: (tag, i) -> {(d, s, a): its output line for each such signature}
    opendkim: dict[tuple[str, int], dict[tuple[str, str, str], list[str]]]
    # Each case's post.eml (what reached relist's ingress leg), verified as ("post", j).
    posts: list[Transaction] = field(default_factory=list)

    def opendkim_line(self, tag: str, i: int, sid: tuple[str, str, str]) -> str | None:
        """OpenDKIM's line for the one signature ``sid`` (None: there is none; a note
        when there are several, which no check accepts)."""
        lines = self.opendkim[(tag, i)].get(sid, [])
        return lines[0] if len(lines) == 1 else (f"{len(lines)} such signatures" if lines else None)


@pytest.fixture(scope="module")
def workdir():
    # opendkim refuses a configuration under a directory others can write (/tmp), so
    # everything lives in a private directory under $HOME (as tests/test_check_interop.py).
    home_tmp = Path.home() / ".cache" / "relist-tests"
    home_tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(dir=home_tmp, prefix="interop-corpus-") as name:
        yield Path(name)


@pytest.fixture(scope="module")
def list_keys(workdir):
    """New list keys, written as ``relist keys generate`` writes them (mode 0600)."""
    keys_dir = workdir / "keys"
    keys_dir.mkdir(mode=0o700)
    out = {}
    for selector, algorithm in (("rsa", "rsa"), ("ed", "ed25519")):
        key = generate(algorithm, 2048)
        path = write_private_key(keys_dir / f"{selector}.{DOMAIN}.key", key)
        assert path.stat().st_mode & 0o777 == 0o600
        out[selector] = (key, path)
    return out


@pytest.fixture(scope="module")
def zone(list_keys):
    records = json.loads((CORPUS / "dns.json").read_text())
    for selector, (key, _) in list_keys.items():
        records[f"{selector}._domainkey.{DOMAIN}"] = [dns_record(key)]
    return records


@pytest.fixture(scope="module")
def dns(zone):
    with DNSServer(zone) as server:
        yield server


def list_settings(mode: str, list_keys, decorated: bool = True) -> dict:
    keys = {"selector": "rsa", "private_key": str(list_keys["rsa"][1]),
            "ed25519_selector": "ed", "ed25519_private_key": str(list_keys["ed"][1])}
    if not decorated:
        return {"mode": mode, "arc_seal": True, **keys}
    # The same decorations in both modes: in preserve mode relist's guard must skip the
    # ones that would break a poster signature, and the verifiers here judge its call.
    return {"mode": mode, "footer": "-- \n{list_name} mailing list\n",
            "subject_prefix": "[{list_name}] ", "arc_seal": True, **keys}


def relist_id_of(data: bytes) -> str | None:
    """The id in relist's own Received field (the topmost one naming relist)."""
    m = re.search(rb"\(relist\)\s+with ESMTP id ([^;\s]+)", data.partition(b"\r\n\r\n")[0])
    return m.group(1).decode() if m else None


def replay(mode: str, list_keys, dns, workdir, ingress: bool = False) -> Replay:
    """Every corpus transaction to relist over SMTP, in order, on one connection.

    ``ingress``: relist gets an [ingress] section delivering to a stand-in Mailman
    (LMTP), every case's post.eml goes through that leg first, and the lists carry no
    decorations of relist's own; the run's ``records`` are the store's records."""
    corpus = load_corpus(CORPUS)
    addresses = json.loads((CORPUS / "lists.json").read_text())
    lists = {address: list_settings(mode, list_keys, decorated=not ingress) for address in addresses}
    tag = INGRESS if ingress else mode
    run = Replay(tag, [tx.name for tx in corpus], [tx.data for tx in corpus])
    posts = load_posts(CORPUS) if ingress else []
    db = workdir / f"{tag}.db"
    with Sink() as sink, Sink(lmtp=True) as mailman:
        data, overrides = {"lists": lists, "store": {"path": str(db)}}, {}
        if ingress:   # as relist/demo.py's demo_config(..., mailman_port=...)
            data["ingress"] = {"deliver_to": f"lmtp:127.0.0.1:{mailman.port}"}
            overrides["ingress"] = {"listen": ("127.0.0.1", 0)}
        cfg = make_config(workdir, sink.port, data, nameserver=dns.nameserver, **overrides)
        with ThreadedServer(cfg) as relist:
            store = relist.relay.store
            if posts:
                # The MTA's side: each post passes the ingress leg on its way to Mailman.
                assert send_ingress(relist.ingress_port, posts) == 0
                assert len(mailman.messages) == len(posts)
                # Two store items per post (its ingress copy and its record) before any
                # egress transaction looks the copies up.
                store.wait_handled(2 * len(posts), timeout=20)
                assert (store.written, store.failures) == (2 * len(posts), 0)
            client = smtplib.SMTP("127.0.0.1", relist.port, timeout=30)
            client.ehlo("mailman.test")
            for tx in corpus:
                before = len(sink.messages)
                try:
                    client.sendmail(tx.mail_from, tx.rcpt_tos, tx.data)
                    run.replies.append("250")
                except smtplib.SMTPException as exc:
                    run.replies.append(str(exc))
                    client.rset()
                # One transaction at a time: the sink's new message (if any) is this one's.
                new = sink.messages[before:]
                assert len(new) <= 1
                if new:
                    assert (new[0].mail_from, new[0].rcpt_tos) == (tx.mail_from, tx.rcpt_tos), tx.name
                run.outputs.append(new[0].data if new else None)
            client.quit()
        # Stopping relist flushed its store.
        if ingress:
            assert (store.written, store.failures) == (2 * len(posts) + len(corpus), 0)
    if ingress:
        with sqlite3.connect(db) as conn:
            rows = {rid: {"steps": json.loads(steps), "facts": json.loads(facts)}
                    for rid, steps, facts in conn.execute("SELECT relist_id, steps, facts FROM transactions")}
        run.records = [rows.get(relist_id_of(out)) if out is not None else None for out in run.outputs]
    return run


def run_mail_dkim(paths: dict[tuple[str, int], Path], dns, processes: int = 2) -> dict[tuple[str, int], dict]:
    """A few perl processes (each over many files) verify every file, DKIM and ARC.
    Two at once: the time goes mostly on DNS round trips, not CPU."""
    script = next(iter(paths.values())).parent / "verify-batch.pl"
    script.write_text(PERL_BATCH)
    files = [str(p) for p in paths.values()]
    procs = []
    for n in range(processes):
        proc = subprocess.Popen(["perl", str(script), str(dns.port)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append((proc, "".join(f"{f}\n" for f in files[n::processes]).encode()))
    by_file = {}
    for proc, stdin in procs:
        out, err = proc.communicate(stdin, timeout=300)
        assert proc.returncode == 0, err.decode()
        for line in out.decode().splitlines():
            result = json.loads(line)
            by_file[result["file"]] = result
    return {key: by_file[str(p)] for key, p in paths.items()}


def run_opendkim(messages: dict[tuple[str, int], bytes], zone: dict, workdir: Path):
    """opendkim in test mode (comma-separated files, few runs) verifies one file per
    signature; returns (tag, i) -> {(d, s, a): [opendkim's line for it]}."""
    d = workdir / "opendkim"
    d.mkdir()
    (d / "dns.txt").write_text("".join(f"{name} "
                                       f"{''.join(values[0]) if isinstance(values[0], list) else values[0]}\n"
                                       for name, values in zone.items() if "._domainkey." in name))
    conf = d / "opendkim.conf"
    conf.write_text(f"Mode v\nSyslog no\nTestDNSData file:{d / 'dns.txt'}\n")
    files: dict[str, tuple[tuple[str, int], tuple[str, str, str]]] = {}
    for (tag, i), data in messages.items():
        for k, (index, t) in enumerate(dkim_fields(data)):
            name = f"{tag}-{i:03d}-{k}.eml"
            (d / name).write_bytes(only_signature(data, index))
            files[name] = ((tag, i), sig_id(t))
    # Relative names (cwd=d), and batches: one argument may not exceed 128 KiB on Linux.
    batches, batch = [], []
    for name in files:
        if sum(len(n) + 1 for n in batch) + len(name) > 60_000:
            batches.append(batch)
            batch = []
        batch.append(name)
    batches += [batch] if batch else []
    seen, codes = {}, set()
    for batch in batches:
        out = subprocess.run(["opendkim", "-x", str(conf), "-t", ",".join(batch)], cwd=d,
                             capture_output=True, timeout=300)
        codes.add(out.returncode)
        # Its output mixes LF and CRLF line ends.
        text = (out.stdout + out.stderr).decode("utf-8", "replace").replace("\r", "")
        for line in text.splitlines():
            m = re.match(r"opendkim: (\S+): (.*)$", line)
            if m and m.group(1) in files:
                seen[m.group(1)] = " | ".join(filter(None, (seen.get(m.group(1)), m.group(2))))
    results: dict[tuple[str, int], dict] = {key: {} for key in messages}
    for name, (key, sid) in files.items():
        results[key].setdefault(sid, []).append(
            seen.get(name, f"(no output from opendkim; exit codes {sorted(codes)})"))
    return results


def opendkim_pass(line: str | None) -> bool:
    return line is not None and line.startswith("verification (") and line.endswith(" succeeded")


@pytest.fixture(scope="module")
def verified(list_keys, dns, zone, workdir) -> Verified:
    replays = {mode: replay(mode, list_keys, dns, workdir) for mode in MODES}
    replays[INGRESS] = replay("preserve", list_keys, dns, workdir, ingress=True)
    posts = load_posts(CORPUS)
    messages: dict[tuple[str, int], bytes] = {}
    for i, data in enumerate(replays[MODES[0]].inputs):
        messages[("in", i)] = data           # as it arrived at relist (what Mailman sent)
    for j, post in enumerate(posts):
        messages[("post", j)] = post.data    # as it arrived at relist's ingress leg
    for mode, run in replays.items():
        for i, data in enumerate(run.outputs):
            if data is not None:
                messages[(mode, i)] = data
                # Negative controls: every verdict below must be able to say "fail".
                messages[(f"{mode}-tampered-body", i)] = tamper_body(data)
                messages[(f"{mode}-tampered-subject", i)] = tamper_subject(data)
    msg_dir = workdir / "messages"
    msg_dir.mkdir()
    paths = {}
    for (tag, i), data in messages.items():
        paths[(tag, i)] = msg_dir / f"{tag}-{i:03d}.eml"
        paths[(tag, i)].write_bytes(data)
    perl = run_mail_dkim(paths, dns) if not needs_mail_dkim.args[0] else {}   # args[0]: "missing"
    odkim = run_opendkim(messages, zone, workdir) if shutil.which("opendkim") else {}
    return Verified(replays, perl, odkim, posts)


# -- helpers for the assertions -------------------------------------------------------------

def delivered(v: Verified, mode: str):
    run = v.replays[mode]
    for i, (name, data) in enumerate(zip(run.names, run.outputs)):
        if data is not None:
            yield i, name, data


class Failures(dict):
    """What failed, by message (or by message and signature): the report lists each."""

    def add(self, key: str, reason: str) -> None:
        self.setdefault(key, []).append(reason)

    def report(self, what: str, total: int) -> str:
        lines = [f"{key}: {'; '.join(reasons)}" for key, reasons in self.items()]
        shown = "\n  ".join(lines[:25]) + ("\n  ..." if len(lines) > 25 else "")
        return f"{what}: {total - len(self)}/{total} ok; failures:\n  {shown}"


def mail_dkim_list_sig(v: Verified, tag: str, i: int, selector: str) -> list[dict]:
    return [s for s in v.perl[(tag, i)]["dkim"] if s["d"].lower() == DOMAIN and s["s"] == selector]


def notice_names() -> set[str]:
    return {f"{p.parent.name}/{p.stem}" for p in (CORPUS / "notices").glob("*/out-*.eml")}


# -- the tests ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", REPLAYS)
def test_every_corpus_transaction_is_relayed(verified, mode):
    run = verified.replays[mode]
    expected = len(list(CORPUS.glob("*/*/out-*.eml")))
    assert expected > 0 and len(run.names) == expected
    refused = Failures()
    for name, reply in zip(run.names, run.replies):
        if reply != "250":
            refused.add(name, reply)
    assert not refused, refused.report(f"{mode}: accepted", expected)
    assert all(out is not None for out in run.outputs)


@needs_mail_dkim
@pytest.mark.parametrize("mode", REPLAYS)
@pytest.mark.parametrize("selector", ["rsa", pytest.param("ed", marks=needs_ed25519)])
def test_list_signatures_pass_mail_dkim(verified, mode, selector):
    failures, total = Failures(), 0
    for i, name, _ in delivered(verified, mode):
        total += 1
        sigs = mail_dkim_list_sig(verified, mode, i, selector)
        if [s["result"] for s in sigs] != ["pass"]:
            failures.add(name, str(sigs or f"no d={DOMAIN} s={selector} signature"))
        for tamper in ("body", "subject"):
            bad = mail_dkim_list_sig(verified, f"{mode}-tampered-{tamper}", i, selector)
            if [s["result"] for s in bad] != ["fail"]:
                failures.add(name, f"with a tampered {tamper}: expected fail, got {bad}")
    assert total > 0
    assert not failures, failures.report(f"{mode}: Mail::DKIM, s={selector}", total)
    print(f"{mode}: Mail::DKIM s={selector} pass {total}/{total} (tampered copies fail)")


@needs_opendkim
@pytest.mark.parametrize("mode", REPLAYS)
@pytest.mark.parametrize("selector", ["rsa", "ed"])
def test_list_signatures_pass_opendkim(verified, mode, selector):
    sid = (DOMAIN, selector, SELECTORS[selector])
    failures, total = Failures(), 0
    for i, name, _ in delivered(verified, mode):
        total += 1
        line = verified.opendkim_line(mode, i, sid)
        if not opendkim_pass(line):
            failures.add(name, line or f"no {'/'.join(sid)} signature")
        for tamper in ("body", "subject"):
            bad = verified.opendkim_line(f"{mode}-tampered-{tamper}", i, sid)
            if bad is None or opendkim_pass(bad) or "failed" not in bad:
                failures.add(name, f"with a tampered {tamper}: expected failed, got {bad}")
    assert total > 0
    assert not failures, failures.report(f"{mode}: OpenDKIM, s={selector}", total)
    print(f"{mode}: OpenDKIM s={selector} pass {total}/{total} (tampered copies fail)")


def arc_seals(data: bytes) -> list[dict[str, str]]:
    fields, _ = split_fields(data)
    return [tags(f.split(b":", 1)[1]) for f in fields if f.split(b":", 1)[0].strip().lower() == b"arc-seal"]


@needs_mail_dkim
@pytest.mark.parametrize("mode", REPLAYS)
def test_relists_arc_set_validates_with_mail_dkim(verified, mode):
    failures, total = Failures(), 0
    for i, name, data in delivered(verified, mode):
        total += 1
        before = arc_seals(verified.replays[mode].inputs[i])
        # cv= is what the chain was on arrival: "none" without one, else Mail::DKIM's verdict.
        expected_cv = "none" if not before else verified.perl[("in", i)]["arc"]
        mine = [t for t in arc_seals(data) if t.get("i") == str(len(before) + 1)]
        got = verified.perl[(mode, i)]
        if len(mine) != 1 or mine[0].get("d") != DOMAIN or mine[0].get("cv") != expected_cv:
            failures.add(name, f"relist's ARC-Seal {mine}, expected i={len(before) + 1} cv={expected_cv}")
        elif got["arc"] != "pass":
            failures.add(name, f"Mail::DKIM ARC {got['arc']} ({got['arc_detail']})")
        for tamper in ("body", "subject"):
            bad = verified.perl[(f"{mode}-tampered-{tamper}", i)]
            if bad["arc"] != "fail":
                failures.add(name, f"with a tampered {tamper}: expected ARC fail, got {bad['arc']}")
    assert total > 0
    assert not failures, failures.report(f"{mode}: Mail::DKIM::ARC::Verifier", total)
    print(f"{mode}: ARC (Mail::DKIM) pass {total}/{total} (tampered copies fail)")


@needs_mail_dkim
@needs_opendkim
def test_preserve_keeps_every_poster_signature_that_verified_on_arrival(verified):
    """A poster signature counts as verified on arrival when OpenDKIM passes it in the
    bytes Mailman sent (and, for RSA, Mail::DKIM agrees); each must still pass both at
    the sink (Mail::DKIM for RSA only: see needs_ed25519)."""
    failures, arrived, broken_on_arrival, examined = Failures(), [], 0, 0
    for i, name, data in delivered(verified, "preserve"):
        for _, t in dkim_fields(verified.replays["preserve"].inputs[i]):
            sid = sig_id(t)
            if sid[0] == DOMAIN:
                continue
            examined += 1
            rsa = sid[2] == "rsa-sha256"
            perl_in = [s["result"] for s in verified.perl[("in", i)]["dkim"]
                       if (s["d"].lower(), s["s"]) == sid[:2]]
            if not opendkim_pass(verified.opendkim_line("in", i, sid)):
                broken_on_arrival += 1
                if rsa and "pass" in perl_in:
                    failures.add(f"{name} {sid}", "on arrival Mail::DKIM passes, OpenDKIM does not")
                continue
            if rsa and perl_in != ["pass"]:
                failures.add(f"{name} {sid}", f"on arrival OpenDKIM passes, Mail::DKIM says {perl_in}")
                continue
            arrived.append((name, sid))
            line = verified.opendkim_line("preserve", i, sid)
            if not opendkim_pass(line):
                failures.add(f"{name} {sid}", f"at the sink OpenDKIM: {line}")
            if rsa:
                perl_out = [s for s in verified.perl[("preserve", i)]["dkim"]
                            if (s["d"].lower(), s["s"]) == sid[:2]]
                if [s["result"] for s in perl_out] != ["pass"]:
                    failures.add(f"{name} {sid}", f"at the sink Mail::DKIM: {perl_out}")
    # The plain list keeps poster signatures intact for most posts (fixtures/mailman/README.md).
    assert len(arrived) > 0
    assert not failures, failures.report("preserve: poster signatures", examined)
    print(f"preserve: poster signatures valid on arrival still pass at the sink "
          f"{len(arrived)}/{len(arrived)} ({broken_on_arrival} already broken on arrival)")


def field_value(data: bytes, name: str) -> bytes | None:
    """The first ``name`` field's value, unfolded and trimmed (None: absent)."""
    for f in split_fields(data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))[0]:
        key, _, value = f.partition(b":")
        if key.strip().lower() == name.lower().encode():
            return b" ".join(value.split())
    return None


def both_pass(v: Verified, tag: str, i: int, sid: tuple[str, str, str]) -> str | None:
    """None when OpenDKIM passes signature ``sid`` in message (tag, i) and, for RSA,
    Mail::DKIM does too (see needs_ed25519); else what they said."""
    why = []
    line = v.opendkim_line(tag, i, sid)
    if not opendkim_pass(line):
        why.append(f"OpenDKIM: {line or 'no such signature'}")
    if sid[2] == "rsa-sha256":
        perl = [s for s in v.perl[(tag, i)]["dkim"] if (s["d"].lower(), s["s"]) == sid[:2]]
        if [s["result"] for s in perl] != ["pass"]:
            why.append("Mail::DKIM: " + (", ".join(f"{s['result']} ({s['detail']})" for s in perl)
                                         or "no such signature"))
    return "; ".join(why) or None


def record_claims(record: dict) -> tuple[dict[str, str], set[str], list[str]]:
    """From relist's store record: attribution's verdict per poster signature ("d/s" ->
    "survived" or the step that broke it), the signatures the repair step proved
    repaired, and what it refused to repair ("body: Mailman changed its content")."""
    breakage = dict(entry.rsplit(": ", 1) for entry in record["facts"].get("breakage", []))
    note = next((n for n in record["steps"] if n["step"] == "repair"), {"action": "", "detail": ""})
    repaired = set()
    if note["action"] == "applied":
        repaired = set(re.findall(r"(\S+/\S+) pass", note["detail"].partition("proof: ")[2]))
    refused = [r.removesuffix("; left as Mailman sent it").strip()
               for r in note["detail"].partition("not repaired: ")[2].split("; ") if r.strip()]
    refused = [r for r in refused if r != "left as Mailman sent it"]
    return {k.lower(): val for k, val in breakage.items()}, {r.lower() for r in repaired}, refused


@needs_mail_dkim
@needs_opendkim
def test_preserve_with_ingress_keeps_every_poster_signature_valid_at_ingress(verified):
    """Issue 4's promise: on an undecorated list every poster signature that was valid
    when the post reached relist's ingress leg (OpenDKIM passes it in post.eml and, for
    RSA, Mail::DKIM agrees) still passes at the sink, with both verifiers, in every
    transaction Mailman made for the post.  On the lists where Mailman itself decorates
    or munges From, the count that survives is reported with the record's reason for the
    rest; on every list, each signature relist's record says survived or was repaired
    must really pass, and each one that passes must be recorded as survived."""
    v, run = verified, verified.replays[INGRESS]
    post_of = {p.name.split("/")[0]: j for j, p in enumerate(v.posts)}
    failures, examined = Failures(), 0
    # Per list: [passing at the sink, passing in Mailman's bytes alone, examined], by
    # signature and transaction; posts whose every valid signature passes everywhere.
    tally: dict[str, list[int]] = {}
    posts_ok: dict[str, dict[str, bool]] = {}
    posts_mailman_ok: dict[str, dict[str, bool]] = {}
    reasons: dict[str, dict[str, int]] = {}
    for i, name, _ in delivered(v, INGRESS):
        case = name.split("/")[0]
        if case not in post_of:
            continue                       # a Mailman notice: no post behind it
        j = post_of[case]
        lst = v.posts[j].rcpt_tos[0].split("@")[0]
        record = run.records[i]
        if record is None:
            failures.add(name, "no store record for this transaction")
            continue
        breakage, repaired, refused = record_claims(record)
        for _, t in dkim_fields(v.posts[j].data):
            sid = sig_id(t)
            label = f"{sid[0]}/{sid[1]}".lower()
            at_ingress = both_pass(v, "post", j, sid)
            if at_ingress is not None:
                perl_in = [s["result"] for s in v.perl[("post", j)]["dkim"]
                           if (s["d"].lower(), s["s"]) == sid[:2]]
                if opendkim_pass(v.opendkim_line("post", j, sid)) or "pass" in perl_in:
                    failures.add(f"{name} {label}", f"the verifiers disagree at ingress: {at_ingress}")
                continue                   # not valid at ingress: nothing promised
            examined += 1
            t_list = tally.setdefault(lst, [0, 0, 0])
            t_list[2] += 1
            at_sink = both_pass(v, INGRESS, i, sid)
            mailman_alone = both_pass(v, "in", i, sid)
            t_list[0] += at_sink is None
            t_list[1] += mailman_alone is None
            posts_ok.setdefault(lst, {}).setdefault(case, True)
            posts_mailman_ok.setdefault(lst, {}).setdefault(case, True)
            posts_ok[lst][case] &= at_sink is None
            posts_mailman_ok[lst][case] &= mailman_alone is None
            said = breakage.get(label, "no attribution")
            claimed = said == "survived" or label in repaired
            if at_sink is not None:
                # Why not: the step attribution names (with what repair refused), or,
                # with no attribution, why relist found no ingress copy to judge by.
                verify = next((n["detail"] for n in record["steps"] if n["step"] == "verify"), "")
                verify = verify.partition(": ")[0].removeprefix("as received (").removesuffix(")")
                changed = [n for n in ("From", "Content-Type", "Content-Transfer-Encoding")
                           if field_value(v.posts[j].data, n) != field_value(run.inputs[i], n)]
                if label in breakage:
                    whys = [f"{said}: {r}" for r in refused] or [f"{said}: no reason recorded"]
                else:
                    whys = [f"no ingress copy matched, Mailman changed {'+'.join(changed) or '?'} ({verify})"]
                for why in whys:
                    reasons.setdefault(lst, {}).setdefault(why, 0)
                    reasons[lst][why] += 1
            if lst == "plain" and at_sink is not None:
                failures.add(f"{name} {label}", f"valid at ingress, at the sink {at_sink} "
                                                f"(record: {said}; not repaired: {refused})")
            if claimed and at_sink is not None:
                repair = " (repaired)" if label in repaired else ""
                failures.add(f"{name} {label}", f"the record says {said}{repair}, at the sink {at_sink}")
            if at_sink is None and said != "survived":
                failures.add(f"{name} {label}", f"passes at the sink, the record says {said}")
    assert tally.get("plain", [0, 0, 0])[2] > 0, "no plain-list poster signature valid at ingress"
    assert not failures, failures.report(f"{INGRESS}: poster signatures", examined)
    ok, alone, total = tally["plain"]
    n_posts = len(posts_ok["plain"])
    print(f"{INGRESS}: plain list {ok}/{total} poster signatures valid at ingress pass at the sink "
          f"({sum(posts_ok['plain'].values())}/{n_posts} signed posts intact in every transaction; "
          f"Mailman alone: {sum(posts_mailman_ok['plain'].values())}/{n_posts} posts, {alone}/{total} "
          f"signatures, as verified here; 13/19 per fixtures/mailman/README.md)")
    for lst in sorted(set(tally) - {"plain"}):
        ok, alone, total = tally[lst]
        why = "; ".join(f"{r} ({n})" for r, n in sorted(reasons.get(lst, {}).items()))
        print(f"{INGRESS}: {lst} list {ok}/{total} pass at the sink "
              f"({sum(posts_ok[lst].values())}/{len(posts_ok[lst])} posts; Mailman alone {alone}/{total}); "
              f"the rest: {why or '-'}")


@pytest.mark.parametrize("verifier", [pytest.param("mail-dkim", marks=needs_mail_dkim),
                                      pytest.param("opendkim", marks=needs_opendkim)])
def test_notices_are_signed_in_resign_mode(verified, verifier):
    notices = notice_names()
    found, failures = 0, Failures()
    for i, name, _ in delivered(verified, "resign"):
        if name not in notices:
            continue
        found += 1
        if verifier == "mail-dkim":    # RSA only: see needs_ed25519
            results = {"rsa": [s["result"] for s in mail_dkim_list_sig(verified, "resign", i, "rsa")]}
        else:
            results = {sel: [verified.opendkim_line("resign", i, (DOMAIN, sel, alg))]
                       for sel, alg in SELECTORS.items()}
        ok = [r == ["pass"] if verifier == "mail-dkim" else opendkim_pass(r[0]) for r in results.values()]
        if not all(ok):
            failures.add(name, str(results))
    assert notices and found == len(notices), (found, sorted(notices))
    assert not failures, failures.report(f"resign: notices ({verifier})", found)
