"""Uploads are refused early and leave nothing behind.

A request whose Content-Length is over the upload limit is refused (413) before a byte of its body is
read; a file that grows past the limit anyway stops being read there; and what is spooled to disk is an
unnamed temporary file (O_TMPFILE), which the kernel frees when the web worker exits, however it exits.
"""

from __future__ import annotations

import tempfile

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import HttpResponse

FORM_MARGIN = 1024 * 1024  # the multipart boundaries and form fields sent beside the file


def over_limit_message(size: int) -> str:
    return (
        f"The upload is {size:,} bytes; the limit is {settings.MAX_UPLOAD_BYTES:,} bytes. Split it into smaller files."
    )


class UploadLimitMiddleware:
    """First in the chain, before anything (CSRF included) reads the body."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > settings.MAX_UPLOAD_BYTES + FORM_MARGIN:
            # The server closes the connection after it (the body was not read): WSGI leaves that to it.
            return HttpResponse(over_limit_message(length), status=413, content_type="text/plain; charset=utf-8")
        return self.get_response(request)


class UnnamedTemporaryUploadedFile(UploadedFile):
    """Like Django's TemporaryUploadedFile, without a name on disk: nothing to clean up after a crash."""

    def __init__(self, name, content_type, size, charset, content_type_extra=None):
        file = tempfile.TemporaryFile(suffix=".upload", dir=settings.FILE_UPLOAD_TEMP_DIR)
        super().__init__(file, name, content_type, size, charset, content_type_extra)


class LimitedTemporaryFileUploadHandler(FileUploadHandler):
    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self.file = UnnamedTemporaryUploadedFile(
            self.file_name, self.content_type, 0, self.charset, self.content_type_extra
        )
        self.received = 0

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > settings.MAX_UPLOAD_BYTES:
            if self.request is not None:
                self.request.upload_refused = over_limit_message(self.received)
            raise StopUpload(connection_reset=True)  # read no further
        self.file.write(raw_data)

    def file_complete(self, file_size):
        self.file.seek(0)
        self.file.size = file_size
        return self.file

    def upload_interrupted(self):
        if hasattr(self, "file"):
            self.file.close()
