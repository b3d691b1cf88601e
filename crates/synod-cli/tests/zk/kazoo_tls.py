"""kazoo over TLS against a synod node's secure ZooKeeper port
(`--zk-secure-addr`, ZooKeeper's secureClientPort) started with
`--client-cert-auth`. Run by crates/synod-cli/tests/zk_tls.rs.

    python kazoo_tls.py SECURE PLAIN CA CERT KEY FOREIGN_CERT FOREIGN_KEY

SECURE is the TLS port, PLAIN the node's plain port (`--zk-addr`), CA the
CA that signed the server's certificate and CERT; FOREIGN_CERT comes from
another CA. Checks:

    digest_acl        a node with a digest ACL, created over TLS: NoAuth for
                      a client without credentials, readable after
                      `add_auth('digest', 'user:pass')` over TLS
    plain_port        the plain port serves the same tree beside the TLS one
    four_letter_words `ruok` and `conf` answered over TLS
    plain_refused     a plain-text client gets nothing from the TLS port
    foreign_refused   a client certificate from another CA is refused
    no_cert_refused   a TLS client without a certificate is refused

Prints `ok: NAME` on success; `FAIL: NAME: why` and exit 1 on failure.
"""

import socket
import ssl
import sys

from kazoo_common import (
    Failed,
    check,
    check_eq,
    client,
    require_kazoo,
    run_checks,
    say,
    watchdog,
)

require_kazoo()

from kazoo.exceptions import NoAuthError  # noqa: E402
from kazoo.handlers.threading import KazooTimeoutError  # noqa: E402
from kazoo.retry import KazooRetry  # noqa: E402
from kazoo.security import make_digest_acl  # noqa: E402

SECURE, PLAIN, CA, CERT, KEY, FOREIGN_CERT, FOREIGN_KEY = sys.argv[1:8]
SECRET = "/tls-secret"


def tls_client(certfile=CERT, keyfile=KEY):
    """A started kazoo client of the TLS port that checks the server's
    certificate and name against CA."""
    return client(
        SECURE,
        use_ssl=True,
        ca=CA,
        certfile=certfile,
        keyfile=keyfile,
        verify_certs=True,
        check_hostname=True,
    )


def stopped(c):
    c.stop()
    c.close()


def no_auth(c, what):
    try:
        data, _ = c.get(SECRET)
    except NoAuthError:
        return
    raise Failed(f"{what}: read {data!r} instead of NoAuth")


def digest_acl():
    creator = tls_client()
    try:
        acl = make_digest_acl("user", "pass", all=True)
        creator.create(SECRET, b"hidden", acl=[acl])
        no_auth(creator, "the creator without credentials")
    finally:
        stopped(creator)
    c = tls_client()
    try:
        no_auth(c, "a TLS client without credentials")
        c.add_auth("digest", "user:pass")
        data, _ = c.get(SECRET)
        check_eq(data, b"hidden", "the data read after add_auth over TLS")
        c.set(SECRET, b"changed over TLS")
        check_eq(c.get(SECRET)[0], b"changed over TLS", "the data set over TLS")
    finally:
        stopped(c)


def plain_port():
    c = client(PLAIN)
    try:
        check(c.exists(SECRET) is not None, "the plain port does not see the node")
        no_auth(c, "a plain client without credentials")
        c.add_auth("digest", "user:pass")
        check_eq(c.get(SECRET)[0], b"changed over TLS", "the data read on the plain port")
    finally:
        stopped(c)


def tls_context(certfile, keyfile):
    ctx = ssl.create_default_context(cafile=CA)
    if certfile:
        ctx.load_cert_chain(certfile, keyfile)
    return ctx


def ask(word, certfile=CERT, keyfile=KEY, tls=True):
    """Sends a four-letter word to the TLS port and reads until the server
    closes; returns the answer, or raises what the connection raised."""
    host, port = SECURE.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    if tls:
        sock = tls_context(certfile, keyfile).wrap_socket(sock, server_hostname=host)
    with sock:
        sock.sendall(word.encode())
        answer = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return answer
            answer += chunk


def four_letter_words():
    check_eq(ask("ruok"), b"imok", "ruok over TLS")
    conf = ask("conf").decode()
    secure_port = SECURE.rsplit(":", 1)[1]
    plain_port = PLAIN.rsplit(":", 1)[1]
    for line in (f"secureClientPort={secure_port}", f"clientPort={plain_port}"):
        check(f"\n{line}\n" in f"\n{conf}", f"conf has no line {line}: {conf!r}")


def refused_word(what, word="ruok", **kw):
    """`ruok` must get no `imok`: the handshake fails, or the server ends
    the connection without an answer."""
    try:
        answer = ask(word, **kw)
    except (ssl.SSLError, OSError) as e:
        say(f"info: {what}: {type(e).__name__}: {e}")
        return
    check(b"imok" not in answer, f"{what}: answered {answer!r}")
    say(f"info: {what}: closed after {answer[:16]!r}")


def refused_session(what, **kw):
    """A kazoo client must not get a session within a few seconds."""
    from kazoo.client import KazooClient

    c = KazooClient(
        hosts=SECURE,
        timeout=4.0,
        connection_retry=KazooRetry(max_tries=-1, max_delay=0.5),
        **kw,
    )
    try:
        c.start(timeout=4)
    except KazooTimeoutError:
        return
    else:
        c.stop()
        raise Failed(f"{what}: kazoo got a session")
    finally:
        c.close()


def plain_refused():
    # As `echo ruok | nc` sends it: five bytes, a whole TLS record header
    # for the server to refuse (four would leave it waiting for the fifth).
    refused_word("plain text on the TLS port", word="ruok\n", tls=False)
    refused_session("a plain-text kazoo client")


def foreign_refused():
    refused_word("a certificate of another CA", certfile=FOREIGN_CERT, keyfile=FOREIGN_KEY)
    refused_session(
        "a kazoo client with a certificate of another CA",
        use_ssl=True,
        ca=CA,
        certfile=FOREIGN_CERT,
        keyfile=FOREIGN_KEY,
        verify_certs=True,
    )


def no_cert_refused():
    refused_word("no client certificate", certfile=None, keyfile=None)
    refused_session(
        "a kazoo client without a certificate", use_ssl=True, ca=CA, verify_certs=True
    )


if __name__ == "__main__":
    watchdog(150)
    run_checks(
        [
            ("digest_acl", digest_acl),
            ("plain_port", plain_port),
            ("four_letter_words", four_letter_words),
            ("plain_refused", plain_refused),
            ("foreign_refused", foreign_refused),
            ("no_cert_refused", no_cert_refused),
        ],
        sys.argv[8:],
    )
