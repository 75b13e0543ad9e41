"""Oversized uploads are refused early and nothing spooled outlives the web worker."""

import socket
from urllib.parse import urlparse

from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils.module_loading import import_string

from datanets.models import Upload


def test_a_body_over_the_limit_is_refused_by_its_length_before_it_is_read(live_server, settings, tmp_path):
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    url = urlparse(live_server.url)
    head = (
        f"POST /datanets/any/contribute/ HTTP/1.1\r\nHost: {url.hostname}\r\nContent-Length: {2**30}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n"
    )
    with socket.create_connection((url.hostname, url.port), timeout=30) as connection:
        connection.sendall(head.encode())  # 1 GiB announced, a few bytes sent: the answer comes anyway
        answer = b""
        while b"smaller files" not in answer and (chunk := connection.recv(4096)):
            answer += chunk
        answer = answer.decode()
    assert answer.startswith("HTTP/1.1 413"), answer[:200]
    assert "the limit is 209,715,200 bytes" in answer
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_grows_past_the_limit_stops_being_read(client, datanet, contributor, settings):
    settings.MAX_UPLOAD_BYTES = 1000
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 100  # spooled to disk, through the limiting handler
    client.force_login(contributor)
    big = SimpleUploadedFile("big.jsonl", b'{"instruction": "q", "output": "a"}\n' * 200)
    response = client.post(reverse("datanet_contribute", args=[datanet.slug]), {"kind": "upload", "file": big})
    assert response.status_code == 200
    assert "the limit is 1,000 bytes" in response.content.decode()
    assert not Upload.objects.exists()


def test_a_spooled_upload_has_no_name_on_disk(settings, tmp_path, rf):
    """What a killed web worker was spooling has no name to leave behind: the kernel frees it."""
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    handler = import_string(settings.FILE_UPLOAD_HANDLERS[-1])(rf.post("/"))
    handler.new_file("file", "records.jsonl", "application/octet-stream", 10_000_000)
    handler.receive_data_chunk(b"x" * 65536, 0)
    assert list(tmp_path.iterdir()) == []  # mid-upload
    received = handler.file_complete(65536)
    assert received.read(5) == b"xxxxx" and received.size == 65536
