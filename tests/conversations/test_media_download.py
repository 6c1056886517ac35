"""media_download against real loopback servers (pytest-httpserver, or a raw socket for broken servers).

Never the `responses` library: it replaces the transport and so skips the address check under test.
No database.
"""

import contextlib
import hashlib
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest
import requests.adapters
from pytest_httpserver import HTTPServer
from werkzeug import Response

from conversations.media import download
from conversations.media.download import address_is_public, host_resolve_checked, media_download
from conversations.media.errors import MediaTooLarge, MediaUnreachable, MediaUrlNotAllowed
from conversations.media.inspect import document_extract_text, media_check_type, media_sniff
from tests.conversations.test_media_inspect import mp4_bytes, pdf_bytes, png_bytes, wav_bytes

LOOPBACK = ["127.0.0.1", "localhost"]


@pytest.fixture
def loopback_allowed(settings):
    settings.MEDIA_ALLOW_PRIVATE_HOSTS = LOOPBACK
    return settings


@pytest.fixture
def small_limit(loopback_allowed):
    loopback_allowed.MEDIA_MAX_BYTES = 1000
    return loopback_allowed


@contextlib.contextmanager
def raw_server(handler):
    """A one-connection-at-a-time HTTP server on 127.0.0.1 that writes whatever `handler(conn, stop)` writes.

    For servers pytest-httpserver cannot imitate: false headers, bytes dripped slowly.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(5)
                request = b""
                with contextlib.suppress(OSError):
                    while b"\r\n\r\n" not in request:
                        received = conn.recv(4096)
                        if not received:
                            break
                        request += received
                    handler(conn, stop)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/file"
    finally:
        stop.set()
        thread.join(timeout=2)
        listener.close()


def redirect(server, source: str, target: str, status: int = 302) -> None:
    server.expect_request(source).respond_with_response(Response(status=status, headers={"Location": target}))


def drip(conn, stop, *, head: bytes, byte: bytes = b"x", every: float = 0.3, count: int = 100):
    conn.sendall(head)
    for _ in range(count):
        if stop.wait(every):
            return
        conn.sendall(byte)


# --- success ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "declared_type"),
    [
        pytest.param(png_bytes(), "IMAGE", id="png"),
        pytest.param(wav_bytes(), "AUDIO", id="wav"),
        pytest.param(mp4_bytes(), "VIDEO", id="mp4"),
        pytest.param(pdf_bytes("Order 1042"), "DOCUMENT", id="pdf"),
    ],
)
def test_each_media_type_is_downloaded_and_accepted(httpserver, loopback_allowed, data, declared_type):
    # given
    httpserver.expect_request("/media").respond_with_data(data, content_type="application/octet-stream")

    # when
    media = media_download(url=httpserver.url_for("/media"), field="content.x.url")
    mime_type = media_sniff(data=media.data)

    # then
    media_check_type(declared_type=declared_type, mime_type=mime_type)
    assert media.data == data
    assert media.size == len(data)
    assert media.sha256 == hashlib.sha256(data).hexdigest()
    assert media.content_type == "application/octet-stream"
    assert media.final_url == media.url == httpserver.url_for("/media")
    assert media.elapsed >= 0


def test_pdf_text_is_read_from_a_downloaded_document(httpserver, loopback_allowed):
    httpserver.expect_request("/doc.pdf").respond_with_data(pdf_bytes("Refund request"), content_type="application/pdf")

    media = media_download(url=httpserver.url_for("/doc.pdf"))

    assert "Refund request" in document_extract_text(data=media.data, mime_type=media_sniff(data=media.data))


def test_three_redirects_are_followed(httpserver, loopback_allowed):
    for source, target in [("/a", "/b"), ("/b", httpserver.url_for("/c")), ("/c", "d")]:
        redirect(httpserver, source, target)
    httpserver.expect_request("/d").respond_with_data(b"final")

    media = media_download(url=httpserver.url_for("/a"))

    assert media.data == b"final"
    assert media.final_url == httpserver.url_for("/d")


def test_connection_goes_to_the_checked_address_with_the_name_in_the_host_header(httpserver, settings, monkeypatch):
    # given: a name only our fake resolver knows, pointing at the test server
    real_getaddrinfo = socket.getaddrinfo

    def fake_getaddrinfo(host, port, *args, **kwargs):
        if host == "media.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    settings.MEDIA_ALLOW_PRIVATE_HOSTS = ["127.0.0.0/8"]
    httpserver.expect_request("/file", headers={"Host": f"media.example:{httpserver.port}"}).respond_with_data(
        b"pinned"
    )

    # when
    media = media_download(url=f"http://media.example:{httpserver.port}/file")

    # then
    assert media.data == b"pinned"


# --- refused addresses --------------------------------------------------------------------------------


def test_loopback_address_is_refused_without_the_allow_list(httpserver, settings):
    settings.MEDIA_ALLOW_PRIVATE_HOSTS = []
    httpserver.expect_request("/x").respond_with_data(b"secret")

    with pytest.raises(MediaUrlNotAllowed) as caught:
        media_download(url=f"http://127.0.0.1:{httpserver.port}/x", field="content.image.url")

    assert caught.value.code == "media_url_not_allowed"
    assert caught.value.status_code == 400
    assert caught.value.details == {"field": "content.image.url", "reason": "address"}
    assert httpserver.log == []  # refused before connecting


def test_a_name_resolving_to_loopback_is_refused_without_the_allow_list(httpserver, settings):
    settings.MEDIA_ALLOW_PRIVATE_HOSTS = []
    httpserver.expect_request("/x").respond_with_data(b"secret")

    with pytest.raises(MediaUrlNotAllowed):
        media_download(url=httpserver.url_for("/x"))  # http://localhost:port/x

    assert httpserver.log == []


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.2:{port}/x",  # loopback, but not the allowed name
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata, even inside an allowed network
        "http://[::ffff:127.0.0.1]:{port}/x",
        "http://10.0.0.1/x",
    ],
)
def test_a_redirect_from_an_allowed_host_to_a_private_address_is_refused(httpserver, settings, target):
    # given: only the name "localhost" is allowed
    settings.MEDIA_ALLOW_PRIVATE_HOSTS = ["localhost", "169.254.0.0/16"]
    location = target.format(port=httpserver.port)
    redirect(httpserver, "/start", location)

    # when / then
    with pytest.raises(MediaUrlNotAllowed) as caught:
        media_download(url=httpserver.url_for("/start"))
    assert caught.value.details["reason"] == "address"


def test_a_name_with_one_private_address_among_public_ones_is_refused(settings, monkeypatch):
    settings.MEDIA_ALLOW_PRIVATE_HOSTS = []
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, port, *a, **k: [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
        ],
    )

    with pytest.raises(MediaUrlNotAllowed):
        media_download(url="http://mixed.example/file")


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.8.8",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "169.254.1.1",
        "169.254.170.2",
        "100.64.0.1",
        "100.127.255.254",
        "0.0.0.0",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.0.192",
        "198.18.0.1",
        "192.0.2.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",
        "ff02::1",
        "fec0::1",
        "2001:db8::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:100.64.0.1",
        "64:ff9b::a9fe:a9fe",  # NAT64 of the metadata address
        "2002:a9fe:a9fe::1",  # 6to4 of the metadata address
    ],
)
def test_non_public_addresses_are_refused(address):
    assert not address_is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert address_is_public(ipaddress.ip_address(address))


def test_allow_list_takes_names_and_networks_but_never_metadata(settings):
    settings.MEDIA_ALLOW_PRIVATE_HOSTS = ["10.0.0.0/8", "localhost"]

    assert host_resolve_checked(host="10.20.30.40", port=80) == "10.20.30.40"
    assert host_resolve_checked(host="localhost", port=80) == "127.0.0.1"
    with pytest.raises(download._AddressRefused):
        host_resolve_checked(host="127.0.0.1", port=80)
    settings.MEDIA_ALLOW_PRIVATE_HOSTS = ["169.254.169.254", "fd00::/8"]
    with pytest.raises(download._AddressRefused):
        host_resolve_checked(host="169.254.169.254", port=80)
    with pytest.raises(download._AddressRefused):
        host_resolve_checked(host="fd00:ec2::254", port=80)


# --- refused URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://user:secret@127.0.0.1:{port}/x",
        "http://user@localhost:{port}/x",
        "http://:secret@localhost:{port}/x",
    ],
)
def test_credentials_in_the_url_are_refused(httpserver, loopback_allowed, url):
    httpserver.expect_request("/x").respond_with_data(b"data")

    with pytest.raises(MediaUrlNotAllowed) as caught:
        media_download(url=url.format(port=httpserver.port))

    assert caught.value.details["reason"] == "credentials"
    assert httpserver.log == []


@pytest.mark.parametrize(
    "url", ["ftp://example.com/file.pdf", "file:///etc/passwd", "gopher://localhost/", "example.com/image.png"]
)
def test_schemes_other_than_http_and_https_are_refused(loopback_allowed, url):
    with pytest.raises(MediaUrlNotAllowed) as caught:
        media_download(url=url)

    assert caught.value.details["reason"] == "scheme"


def test_a_url_without_host_is_refused(loopback_allowed):
    with pytest.raises(MediaUrlNotAllowed) as caught:
        media_download(url="http:///image.png")

    assert caught.value.details["reason"] == "invalid_url"


# --- unreachable --------------------------------------------------------------------------------------


def test_more_than_three_redirects_are_refused(httpserver, loopback_allowed):
    for source, target in [("/a", "/b"), ("/b", "/c"), ("/c", "/d"), ("/d", "/e")]:
        redirect(httpserver, source, target, status=301)
    httpserver.expect_request("/e").respond_with_data(b"too far")

    with pytest.raises(MediaUnreachable) as caught:
        media_download(url=httpserver.url_for("/a"), field="content.video.url")

    assert caught.value.details == {"field": "content.video.url", "reason": "too_many_redirects"}
    assert [request.path for request, _ in httpserver.log] == ["/a", "/b", "/c", "/d"]


@pytest.mark.parametrize("status", [404, 500])
def test_an_http_error_status_is_reported(httpserver, loopback_allowed, status):
    httpserver.expect_request("/x").respond_with_data(b"nope", status=status)

    with pytest.raises(MediaUnreachable) as caught:
        media_download(url=httpserver.url_for("/x"))

    assert caught.value.code == "media_unreachable"
    assert caught.value.details["reason"] == "http_status"
    assert caught.value.details["status"] == status


def test_a_closed_port_is_reported(loopback_allowed):
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]

    with pytest.raises(MediaUnreachable) as caught:
        media_download(url=f"http://127.0.0.1:{port}/x")

    assert caught.value.details["reason"] == "connection_failed"


# --- size limit ---------------------------------------------------------------------------------------


def test_a_file_at_the_limit_passes(httpserver, small_limit):
    httpserver.expect_request("/x").respond_with_data(b"x" * 1000)

    assert media_download(url=httpserver.url_for("/x")).size == 1000


def test_a_file_over_the_limit_with_a_true_content_length_fails(httpserver, small_limit):
    httpserver.expect_request("/x").respond_with_data(b"x" * 5000)

    with pytest.raises(MediaTooLarge) as caught:
        media_download(url=httpserver.url_for("/x"), field="content.audio.url")

    assert caught.value.code == "media_too_large"
    assert caught.value.status_code == 413
    assert caught.value.details == {"field": "content.audio.url", "limitBytes": 1000}


def test_a_file_over_the_limit_without_content_length_fails(httpserver, small_limit):
    def stream(_request):
        return Response((b"x" * 100 for _ in range(50)), content_type="image/png")

    httpserver.expect_request("/x").respond_with_handler(stream)

    with pytest.raises(MediaTooLarge):
        media_download(url=httpserver.url_for("/x"))


def test_a_file_over_the_limit_with_a_false_content_length_fails(small_limit):
    def chunked_body_under_a_small_length(conn, stop):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(50):
            conn.sendall(b"64\r\n" + b"x" * 100 + b"\r\n")
        conn.sendall(b"0\r\n\r\n")

    with raw_server(chunked_body_under_a_small_length) as url, pytest.raises(MediaTooLarge):
        media_download(url=url)


def test_an_invalid_content_length_does_not_lift_the_limit(small_limit):
    def body_until_close(conn, stop):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\nConnection: close\r\n\r\n" + b"x" * 5000)

    with raw_server(body_until_close) as url, pytest.raises(MediaTooLarge):
        media_download(url=url)


def test_bytes_past_a_small_content_length_are_never_read(small_limit):
    def more_than_announced(conn, stop):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 5000)

    with raw_server(more_than_announced) as url:
        assert media_download(url=url).size == 100


# --- whole-download deadline --------------------------------------------------------------------------


def test_a_server_dripping_the_body_is_cut_at_the_whole_download_deadline(loopback_allowed):
    # given: every byte arrives well within any per-read timeout
    loopback_allowed.MEDIA_DOWNLOAD_TIMEOUT_SECONDS = 1

    def slow_body(conn, stop):
        drip(conn, stop, head=b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")

    # when
    with raw_server(slow_body) as url:
        started = time.monotonic()
        with pytest.raises(MediaUnreachable) as caught:
            media_download(url=url)
        elapsed = time.monotonic() - started

    # then
    assert caught.value.details["reason"] == "timeout"
    assert elapsed < 3


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nX-Slow: ", id="header-line"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", id="chunk-size-line"),
        pytest.param(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", id="close-delimited-body"),
    ],
)
def test_a_server_dripping_anything_is_cut_at_the_deadline(loopback_allowed, head):
    loopback_allowed.MEDIA_DOWNLOAD_TIMEOUT_SECONDS = 0.5
    byte = b"0" if b"chunked" in head else b"x"

    with raw_server(lambda conn, stop: drip(conn, stop, head=head, byte=byte)) as url:
        started = time.monotonic()
        with pytest.raises(MediaUnreachable) as caught:
            media_download(url=url)
        elapsed = time.monotonic() - started

    assert caught.value.details["reason"] == "timeout"
    assert elapsed < 2.5


def test_a_server_that_never_answers_times_out(loopback_allowed):
    loopback_allowed.MEDIA_DOWNLOAD_TIMEOUT_SECONDS = 0.5

    with raw_server(lambda conn, stop: stop.wait(5)) as url, pytest.raises(MediaUnreachable) as caught:
        media_download(url=url)

    assert caught.value.details["reason"] == "timeout"


# --- TLS ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_certificate(tmp_path_factory):
    """A self-signed certificate for the name "localhost" (cert path, key path)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the TLS tests need the openssl command to make a certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


@pytest.fixture
def tls_server(tls_certificate):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*tls_certificate)
    server = HTTPServer(host="localhost", port=0, ssl_context=context)
    server.start()
    server.expect_request("/x").respond_with_data(b"over tls")
    yield server
    server.clear()
    server.stop()


def test_an_untrusted_certificate_is_refused(tls_server, loopback_allowed):
    with pytest.raises(MediaUnreachable) as caught:
        media_download(url=tls_server.url_for("/x"))

    assert caught.value.details["reason"] == "tls_failed"


def test_tls_checks_the_url_name_although_it_connects_to_the_checked_address(
    tls_server, tls_certificate, loopback_allowed, monkeypatch
):
    # given: the test certificate is trusted (requests reads this path on each request)
    monkeypatch.setattr(requests.adapters, "DEFAULT_CA_BUNDLE_PATH", tls_certificate[0])

    # when / then: the name in the certificate matches
    assert media_download(url=tls_server.url_for("/x")).data == b"over tls"

    # when / then: same server, same address, but the URL's name is not the certificate's
    with pytest.raises(MediaUnreachable) as caught:
        media_download(url=f"https://127.0.0.1:{tls_server.port}/x")
    assert caught.value.details["reason"] == "tls_failed"
