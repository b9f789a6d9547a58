"""The table that says why a delivery failed: one row per published rejection text.

An enhanced status code alone does not say why (RFC 3463 §3.8: X.7.1 is any
"delivery not authorized, message refused": spam, relaying and DMARC alike), so each
row pairs a pattern for the code with a pattern for the receiver's text, and names
the cause, where the text was published and a real example of it.
``tests/test_bounce_classify.py`` classifies every row's example and expects that
row: the table is data, tested row by row, in the manner of flufl.bounce's
detectors.

The first matching row wins, so the rows go from most to least specific:

1. texts of the big receivers and of the common filters (they name their cause even
   under a misleading code: Comcast's DMARC rejection is a 5.2.0, Gmail's is 5.7.1
   in old replies, GMX sends no enhanced code at all);
2. the enhanced codes that name an authentication cause by themselves (RFC 7372
   X.7.20-X.7.26, Microsoft's 5.7.509 and 5.7.515);
3. generic texts: relaying or submission refused (not a failure of the post's
   authentication), the words DMARC, SPF, DKIM, "unauthenticated", spam and
   reputation, unknown or full mailboxes;
4. codes that only say "mailbox" (X.1.x, X.2.x), then X.7.1 and anything else:
   ``other``.

Patterns: ``status`` is matched against the whole of each enhanced code the failure
carries, ``text`` searched (case-insensitively) in the receiver's text with its SMTP
reply codes removed, so a multi-line reply ("550-5.7.26 ... 550-5.7.26 ...") reads as
one sentence.  Curly apostrophes are straightened first.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["AUTHENTICATION", "RULES", "Cause", "Rule"]


class Cause(str, Enum):
    """Why a delivery failed, as a list admin needs to know it."""

    DMARC = "dmarc"        # the From domain's DMARC policy (alignment) refused it
    DKIM = "dkim"          # no valid (or no acceptable) DKIM signature
    SPF = "spf"            # SPF failed for the envelope sender or HELO
    AUTH = "auth"          # an authentication requirement that names none of those
    MAILBOX = "mailbox"    # unknown user, disabled account, mailbox full
    SPAM = "spam"          # content, reputation, block lists
    OTHER = "other"        # anything else (relaying refused, size, protocol...)


#: The causes that are the sender's authentication, not the member's mailbox: a list
#: should not count these against the member.
AUTHENTICATION = frozenset({Cause.DMARC, Cause.DKIM, Cause.SPF, Cause.AUTH})


@dataclass(frozen=True, slots=True)
class Rule:
    """One row: ``status`` and ``text`` are regular expressions ("" matches anything)."""

    name: str
    cause: Cause
    status: str
    text: str
    source: str
    example: str


_GMAIL = "Gmail SMTP errors and codes, https://support.google.com/a/answer/3726730"
_IANA = "IANA SMTP Enhanced Status Codes, https://www.iana.org/assignments/smtp-enhanced-status-codes/"
_W2W = "https://www.wordtothewise.com/2014/04/example-bounces-due-yahoo-preject"
_ANY = r"[245]\.\d{1,3}\.\d{1,3}"

RULES: tuple[Rule, ...] = (
    # -- 1. receivers' and filters' own texts ----------------------------------------
    Rule("gmail-dmarc", Cause.DMARC, "", r"not accepted due to (?:the )?domain'?s dmarc policy",
         _GMAIL + " (550 5.7.26; 451 4.7.26 when DNS fails; 550 5.7.1 in older replies)",
         "550-5.7.26 Unauthenticated email from poster.example is not accepted due to 550-5.7.26 "
         "domain's DMARC policy. Please contact the administrator of 550-5.7.26 poster.example domain "
         "if this was a legitimate mail. Please visit 550-5.7.26 "
         "https://support.google.com/mail/answer/2451690 to learn about the 550 5.7.26 DMARC "
         "initiative. z2si1584129pfn.61 - gsmtp"),
    Rule("gmail-unaligned", Cause.DMARC, "", r"isn't aligned with either the authenticated spf or dkim",
         _GMAIL + " (421 4.7.32, 5.7.32)",
         "421-4.7.32 Your email has been rate limited because the From: header (RFC5322) in this "
         "message isn't aligned with either the authenticated SPF or DKIM organizational domain."),
    Rule("gmail-no-dmarc-record", Cause.DMARC, "", r"doesn't have a dmarc record",
         _GMAIL + " (421 4.7.40, 550 5.7.40)",
         "550-5.7.40 Your message was blocked because the sending domain doesn't have a DMARC record "
         "or the DMARC record doesn't specify a DMARC policy."),
    Rule("gmail-unauthenticated", Cause.AUTH, "", r"gmail requires all senders to authenticate with "
         r"either spf or dkim", _GMAIL + " (550 5.7.26, 421 4.7.26)",
         "421-4.7.26 This email has been rate limited because it is unauthenticated. Gmail requires all "
         "senders to authenticate with either SPF or DKIM. Authentication results: DKIM = did not pass "
         "SPF [lists.example.org] with ip: [192.0.2.25] = did not pass."),
    Rule("gmail-unauthenticated-risk", Cause.AUTH, "", r"this (?:e?mail|message) is unauthenticated",
         "Gmail, https://cloudhelpcenter.com/help-email/mail-blocked-unauthenticated-gmail/",
         "550-5.7.26 This mail is unauthenticated, which poses a security risk to the sender and Gmail "
         "users, and has been blocked. The sender must authenticate with at least one of SPF or DKIM."),
    Rule("gmail-auth-checks", Cause.AUTH, "", r"does not have authentication information or fails to pass "
         r"authentication checks", "Gmail (550 5.7.1, 550 5.7.26, 421 4.7.0), "
         "https://www.dmarctrust.com/troubleshooting/unauthenticated-email-rejected",
         "550-5.7.1 This message does not have authentication information or fails to 550-5.7.1 pass "
         "authentication checks. To best protect our users from spam, the 550-5.7.1 message has been "
         "blocked. Please visit 550-5.7.1 https://support.google.com/mail/answer/81126 for more "
         "information."),
    Rule("gmail-spf-hardfail", Cause.SPF, "", r"spf record with a hard fail policy",
         _GMAIL + " (550 5.7.26)",
         "550-5.7.26 The MAIL FROM domain [lists.example.org] has an SPF record with a hard fail policy "
         "(-all) but it fails to pass SPF checks with the ip: [192.0.2.25]. To best protect our users "
         "from spam and phishing, the message has been blocked."),
    Rule("gmail-spf", Cause.SPF, "", r"(?:didn't|did not) pass spf authentication|spf authentication didn't "
         r"pass|authenticate (?:their email )?with spf\b", _GMAIL + " (550 5.7.27, 421 4.7.27)",
         "550-5.7.27 This message was blocked because it didn't pass SPF authentication. Gmail requires "
         "bulk email senders to authenticate their email with SPF. Authentication results: SPF with "
         "192.0.2.25 = did not pass"),
    Rule("gmail-spf-suspicious", Cause.SPF, "", r"spf record of the sending domain has one or more "
         r"suspicious entries", _GMAIL + " (451 4.7.24, 550 5.7.24)",
         "451-4.7.24 The SPF record of the sending domain has one or more suspicious entries. To protect "
         "our users from spam, email sent from your IP address has been temporarily rate limited."),
    Rule("gmail-dkim", Cause.DKIM, "", r"(?:didn't|did not) pass dkim authentication|dkim authentication "
         r"didn't pass|authenticate (?:their email )?with dkim\b", _GMAIL + " (550 5.7.30, 421 4.7.30)",
         "550-5.7.30 This message was blocked because it didn't pass DKIM authentication. Gmail requires "
         "bulk email senders to authenticate their email with DKIM. Authentication results: DKIM = did "
         "not pass"),
    Rule("gmail-ptr", Cause.AUTH, "", r"does(?:n't| not) have a ptr record",
         _GMAIL + " (421 4.7.0, 451 4.7.23, 550 5.7.25; RFC 7372 counts rDNS as authentication)",
         "550-5.7.25 The IP address sending this message does not have a PTR record setup, or the "
         "corresponding forward DNS entry does not point to the sending IP."),
    Rule("microsoft-dmarc", Cause.DMARC, "", r"does not pass dmarc verification",
         "Microsoft 365 / Outlook.com NDR 5.7.509, https://www.itechtics.com/sending-domain-dmarc-failure/",
         "550 5.7.509 Access denied, sending domain [POSTER.EXAMPLE] does not pass DMARC verification and "
         "has a DMARC policy of reject. [AM0PR01MB1234.eurprd01.prod.outlook.com 2024-06-26T06:23:31.981Z]"),
    Rule("microsoft-auth-level", Cause.AUTH, "", r"does(?:n't| not) meet the required authentication level",
         "Outlook.com NDR 5.7.515, https://support.microsoft.com/en-au/topic/fix-ndr-error-550-5-7-515-in-"
         "outlook-com-34cfe8f8-6fbf-457e-9e8b-9e4dbaf4e0ef",
         "550 5.7.515 Access denied, sending domain poster.example does not meet the required "
         "authentication level."),
    Rule("microsoft-spf", Cause.SPF, "", r"rejected because of sender policy framework violation",
         "Exchange Online NDR 5.7.23 (text as listed in sisimai lib/sisimai/rhost/microsoft.rb)",
         "550 5.7.23 The message was rejected because of Sender Policy Framework violation"),
    Rule("microsoft-ipv6", Cause.AUTH, "", r"must pass either spf or dkim validation",
         "Exchange Online over IPv6 (sisimai lib/sisimai/rhost/microsoft.rb)",
         "450 4.7.26 Service unavailable, message sent over IPv6 [2001:db8::25] must pass either SPF or "
         "DKIM validation, this message is not signed"),
    Rule("hotmail-owner-policy", Cause.DMARC, "", r"due to domain owner policy restrictions",
         "Hotmail, 2014 (Yahoo's p=reject), " + _W2W,
         "550 5.7.0 (COL0-MC6-F31) Unfortunately, messages from (192.0.2.25) on behalf of (poster.example) "
         "could not be delivered due to domain owner policy restrictions."),
    Rule("yahoo-policy", Cause.DMARC, "", r"not accepted for policy reasons",
         "Yahoo and AOL 554 5.7.9, https://help.yahoo.com/kb/SLN7253.html (\"failed one or more of\" DKIM, "
         "SPF, DMARC; published when Yahoo moved to p=reject) and " + _W2W,
         "554 5.7.9 Message not accepted for policy reasons. See https://postmaster.yahooinc.com/error-codes"),
    Rule("yahoo-unauthenticated", Cause.AUTH, "", r"yahoo requires all senders to authenticate with "
         r"either spf or dkim", "Yahoo 550 5.7.9 (2024), https://www.autospf.com/blog/why-yahoo-blocks-"
         "emails-and-how-to-fix-sender-unauthenticated/",
         "550 5.7.9 This mail has been blocked because the sender is unauthenticated. Yahoo requires all "
         "senders to authenticate with either SPF or DKIM."),
    Rule("apple-dmarc", Cause.DMARC, "", r"rejected due to \S+'s dmarc policy",
         "Apple iCloud 554 5.7.1, https://support.apple.com/en-us/HT204137 (sisimai set-of-emails "
         "rhost-apple-02.eml)",
         "554 5.7.1 Your message was rejected due to poster.example's DMARC policy. See "
         "https://support.apple.com/en-us/HT204137 for info"),
    Rule("apple-spf-dkim", Cause.AUTH, "", r"blocked for failing both spf and dkim",
         "Apple iCloud [HME1] (sisimai lib/sisimai/rhost/apple.rb)",
         "554 5.7.1 [HME1] This message was blocked for failing both SPF and DKIM authentication checks. "
         "See https://support.apple.com/en-us/HT204137 for mailing best practices"),
    Rule("mailru-dmarc", Cause.DMARC, "", r"due to domain \(\S+\) owner dmarc policy",
         "Mail.ru, https://help.mail.ru/mail-help/postmaster/dmarc and "
         "https://help.ishosting.com/en/dmarc-check",
         "550 5.7.1 This message was not accepted due to domain (poster.example) owner DMARC policy "
         "(RFC 7489) https://help.mail.ru/mail-help/postmaster/dmarc"),
    Rule("comcast-dmarc", Cause.DMARC, "", r"message rejected due to dmarc",
         "Comcast DM000001 (a 5.2.0, not a 5.7.x), " + _W2W,
         "550 5.2.0 meQj1n01053u42A0HeQj3v Message rejected due to DMARC. Please see "
         "http://postmaster.comcast.net/smtp-error-codes.php#DM000001"),
    Rule("gmx-dmarc", Cause.DMARC, "", r"reject due to domain'?s dmarc policy",
         "GMX / WEB.DE / mail.com (no enhanced code), "
         "https://www.email-tools.me/news/gmx-web-de-mail-com-dmarc-enforcement-2026/",
         "554-Transaction failed 554 Reject due to domain's DMARC policy"),
    Rule("gmx-spf", Cause.SPF, "", r"reject due to spf policy", "GMX / WEB.DE, https://smtp.codes/unitedinternet/",
         "550 <m01@gmx.example>: Reject due to SPF policy. The originating IP of the message is not "
         "permitted by the domain owner"),
    Rule("zoho-dmarc", Cause.DMARC, "", r"rejected per dmarc policy for",
         "Zoho (sisimai set-of-emails lhost-postfix-73.eml, smtpin.zoho.com)",
         "550 5.7.1 Email rejected per DMARC policy for poster.example"),
    Rule("opendmarc", Cause.DMARC, "", r"rejected by dmarc policy for",
         "OpenDMARC (opendmarc/opendmarc.c: \"rejected by DMARC policy for %s\", 550 5.7.1)",
         "550 5.7.1 rejected by DMARC policy for poster.example"),
    Rule("rspamd-dmarc", Cause.DMARC, "", r"action set by dmarc",
         "rspamd (src/plugins/lua/dmarc.lua: set_pre_result(..., 'Action set by DMARC'); milter reply "
         "554 5.7.1), https://lima-city.de/hilfe/abgelehnte-e-mails-aufgrund-von-dmarc-policy",
         "554 5.7.1 Action set by DMARC"),
    Rule("mimecast-dmarc", Cause.DMARC, "", r"dmarc sender invalid",
         "Mimecast, https://community.mimecast.com/s/article/email-security-cloud-gateway-mimecast-smtp-"
         "error-codes", "550 DMARC Sender Invalid - envelope rejected"),
    Rule("mimecast-spf", Cause.SPF, "", r"spf sender invalid",
         "Mimecast, https://community.mimecast.com/s/article/email-security-cloud-gateway-mimecast-smtp-"
         "error-codes", "550 SPF Sender Invalid - envelope rejected"),
    Rule("mimecast-dkim", Cause.DKIM, "", r"dkim sender invalid",
         "Mimecast, https://community.mimecast.com/s/article/email-security-cloud-gateway-mimecast-smtp-"
         "error-codes", "550 DKIM Sender Invalid - envelope rejected"),
    Rule("proofpoint-spf", Cause.SPF, "", r"rejected per sender's spf policy",
         "Proofpoint Essentials, https://www.404andmore.com/proofpoint-essentials-fixing-the-550-5-7-1-"
         "spf-rejected-error/", "550 5.7.1 Message rejected per sender's SPF policy - OXSUS001_514"),
    Rule("policyd-spf", Cause.SPF, "", r"message rejected due to: (?:spf|receiver policy for spf|domain "
         r"owner discourages)", "Postfix policyd-spf (spf-engine), "
         "https://manpages.ubuntu.com/manpages/plucky/man5/policyd-spf.conf.5.html",
         "550 5.7.23 <m01@members.example>: Recipient address rejected: Message rejected due to: SPF fail "
         "- not authorized. Please see http://www.openspf.net/Why?s=mfrom;id=plain-bounces@lists.example"
         ".org;ip=192.0.2.25;r=<UNKNOWN>"),
    Rule("yandex-spf", Cause.SPF, "", r"spf check failed",
         "Yandex, https://yandex.com/support/mail/bounces/other.html",
         "550 5.7.1 SPF check failed: 192.0.2.25 is not authorized to send in the name of "
         "lists.example.org"),
    Rule("barracuda-reputation", Cause.SPAM, "", r"blocked using barracuda reputation",
         "Barracuda, https://luxsci.com/blog/?p=16857",
         "554 Service unavailable; Client host [192.0.2.25] blocked using Barracuda Reputation; "
         "http://bbl.barracudacentral.com/q.cgi?ip=192.0.2.25"),
    Rule("yandex-spam", Cause.SPAM, "", r"under suspicion of spam",
         "Yandex, https://yandex.com/support/mail/bounces/yandex/message-rejected-under-suspicion-of-"
         "spam.html", "554 5.7.1 Message rejected under suspicion of SPAM"),
    Rule("gmail-spam", Cause.SPAM, "", r"likely unsolicited|unusual rate of (?:unsolicited )?e?mail|very "
         r"low reputation|due to the nature of the content", _GMAIL + " (550 5.7.1, 421 4.7.0, 4.7.28)",
         "550-5.7.1 [192.0.2.25] Our system has detected that this message is 550-5.7.1 likely "
         "unsolicited mail. To reduce the amount of spam sent to Gmail, 550-5.7.1 this message has been "
         "blocked."),
    Rule("yahoo-complaints", Cause.SPAM, "", r"deferred due to (?:unexpected volume or )?user complaints",
         "Yahoo [TSS04], https://smtp.codes/yahoo",
         "421 4.7.0 [TSS04] Messages from 192.0.2.25 temporarily deferred due to unexpected volume or user "
         "complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes"),
    Rule("rspamd-spam", Cause.SPAM, "", r"spam message rejected",
         "rspamd milter default (src/libserver/milter_internal.h RSPAMD_MILTER_REJECT_MESSAGE)",
         "554 5.7.1 Spam message rejected"),
    # -- 2. enhanced codes that name the cause ---------------------------------------
    Rule("rfc7372-dkim", Cause.DKIM, r"[45]\.7\.2[012]", "",
         _IANA + " (RFC 7372: X.7.20 no passing, X.7.21 no acceptable, X.7.22 no author-matched DKIM "
         "signature)", "550 5.7.20 No passing DKIM signature found"),
    Rule("rfc7372-spf", Cause.SPF, r"[45]\.7\.2[34]", "",
         _IANA + " (RFC 7372: X.7.23 SPF validation failed, X.7.24 SPF validation error)",
         "550 5.7.23 SPF validation failed"),
    Rule("rfc7372-rdns", Cause.AUTH, r"[45]\.7\.25", "", _IANA + " (RFC 7372: X.7.25 reverse DNS validation "
         "failed)", "550 5.7.25 Reverse DNS validation failed"),
    # X.7.26 is "multiple authentication checks failed"; DMARC is that combination, and
    # it is what Gmail sends for DMARC (its other X.7.26 texts are matched above).
    Rule("rfc7372-multiple", Cause.DMARC, r"[45]\.7\.26", "", _IANA + " (RFC 7372: X.7.26 multiple "
         "authentication checks failed)", "550 5.7.26 Multiple authentication checks failed"),
    # X.7.27 is registered as "sender address has null MX" (RFC 7505).  A list's
    # bounces address receives this very bounce, so it has no null MX: list mail gets
    # X.7.27 only as Gmail's SPF code (gmail-spf above, when the text survives).
    Rule("gmail-x.7.27", Cause.SPF, r"[45]\.7\.27", "", _GMAIL + " (5.7.27, 4.7.27: SPF did not pass; "
         "IANA: null MX, RFC 7505)", "550 5.7.27 blocked"),
    Rule("microsoft-5.7.509", Cause.DMARC, r"5\.7\.509", "", "Microsoft 365 NDR 5.7.509 (DMARC reject)",
         "550 5.7.509 Access denied"),
    Rule("microsoft-5.7.515", Cause.AUTH, r"5\.7\.515", "", "Outlook.com NDR 5.7.515 (authentication level)",
         "550 5.7.515 Access denied"),
    # -- 3. generic texts ------------------------------------------------------------
    # Refusals of the connection or of relaying are not the post's authentication.
    Rule("relay-denied", Cause.OTHER, "", r"relay(?:ing)? (?:access )?(?:denied|not permitted|prohibited)|"
         r"unable to relay|mail relay denied|not permitted to relay",
         "Postfix reject_unauth_destination (\"Relay access denied\"), Exchange (\"Unable to relay\")",
         "554 5.7.1 <m01@members.example>: Relay access denied"),
    Rule("submission-auth", Cause.OTHER, "", r"client was not authenticated|authentication required|must "
         r"issue a starttls|sender (?:was )?not authenticated (?:by organization|for)|not authorized to send "
         r"e?mail directly", "SMTP AUTH / recipient-side restrictions: Exchange 5.7.57, 5.7.12, 5.7.13x; "
         + _GMAIL + " (530 5.7.0)",
         "550 5.7.57 SMTP; Client was not authenticated to send anonymous mail during MAIL FROM"),
    Rule("dmarc", Cause.DMARC, "", r"\bdmarc\b", "a receiver that names DMARC (XS4ALL, " + _W2W + ")",
         "550 5.7.1 DMARC failure for domain poster.example, policy reject"),
    Rule("spf", Cause.SPF, "", r"\bspf\b|sender policy framework",
         "a receiver that names SPF (sisimai lib/sisimai/reason/authfailure.rb)",
         "550 5.7.1 Sender Policy Framework (SPF) fail"),
    Rule("dkim", Cause.DKIM, "", r"\bdkim\b|domainkeys", "a receiver that names DKIM",
         "550 5.7.1 DKIM signature verification failed"),
    Rule("unauthenticated", Cause.AUTH, "", r"\bunauthenticated\b|(?:fails? to pass|(?:does|did) ?n[o']t "
         r"pass) (?:\w+ )?authentication", "a receiver that says the sender is not authenticated",
         "550 5.7.1 Message does not pass authentication checks"),
    Rule("spam", Cause.SPAM, "", r"\bspam|unsolicited|\bjunk\b|blocked using|block ?list|black ?list|"
         r"\bdnsbl\b|\brbl\b|reputation|spamhaus|cloudmark|user complaints|content filter|phishing",
         "content and reputation filters (zone-mta config/bounces.txt collects many)",
         "550 5.7.1 Service unavailable; client [192.0.2.25] blocked using zen.spamhaus.org"),
    Rule("mailbox-unknown", Cause.MAILBOX, "", r"user unknown|unknown (?:user|recipient)|no such (?:user|"
         r"mailbox|recipient)|does(?: not|n't) exist|mailbox (?:not found|unavailable|does not exist)|"
         r"recipient ?not ?found|invalid (?:recipient|mailbox)|doesn't have a \S+ account|is no longer "
         r"valid|(?:account|mailbox|user)\b[^.]{0,40}?\b(?:is|has been) (?:disabled|inactive|suspended)|"
         r"mailbox (?:is )?disabled",
         _GMAIL + " (550 5.1.1, 550 5.2.1); Postfix local_recipient_maps; Yahoo \"dd This user doesn't "
         "have a yahoo.com account\"", "550-5.1.1 The email account that you tried to reach does not "
         "exist. Please try 550-5.1.1 double-checking the recipient's email address for typos"),
    Rule("mailbox-full", Cause.MAILBOX, "", r"over ?quota|quota exceeded|mailbox (?:is )?full|out of storage|"
         r"insufficient (?:system )?storage|exceeded storage", _GMAIL + " (452 4.2.2, 552 5.2.2)",
         "452-4.2.2 The recipient's inbox is out of storage space. Please direct the recipient to "
         "https://support.google.com/mail/?p=OverQuotaTemp"),
    # -- 4. codes that say little ----------------------------------------------------
    Rule("mailbox-status", Cause.MAILBOX, r"[45]\.(?:1\.(?:[0-36]|10)|2\.[012])", "",
         _IANA + " (X.1.x addressing, X.2.0-2 mailbox status)", "550 5.1.1 <m01@members.example>"),
    Rule("x.7.1", Cause.OTHER, r"[45]\.7\.1", "", _IANA + " (X.7.1 delivery not authorized: spam, "
         "relaying and DMARC alike, so it says nothing by itself)", "550 5.7.1 Message refused"),
    Rule("unclassified", Cause.OTHER, "", "", "none: no row above matched", "554 Transaction failed"),
)
