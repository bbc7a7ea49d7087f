"""Downloads one file from a peer the way the Python original's downloader reads: one
recv(1024) per reply, each parsed alone with json.loads, then the file with one
recv(fileSize).

Written for napster's tests (not the original's code). Usage:
    original_downloader.py PORT NAME OUT
Sends the DOWNLOAD_REQUEST the original meant to send (no newline) to 127.0.0.1:PORT; for an
OK it waits for the uploader's decision, takes the data with one recv(fileSize) as the
original does, then (unlike the original) reads on to the end of the stream, so the test can
tell what the original would have kept from what was sent. Writes everything that arrived to
OUT. Prints one line per reply and a last line "data FIRST TOTAL" (bytes the single recv
returned, bytes in all) or the exception that stopped it.
"""
import json
import socket
import sys


def main():
    port, name, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    request = {"method": "DOWNLOAD_REQUEST", "data": {"filename": name, "port": port}}
    s.sendall(json.dumps(request).encode())
    try:
        first = json.loads(s.recv(1024).decode())
        print("reply", first["status"], first.get("fileSize"), flush=True)
        if first["status"] != "OK":
            return
        second = json.loads(s.recv(1024).decode())
        print("reply", second["status"], flush=True)
        if second["status"] != "downloadAccepted":
            return
        data = s.recv(first["fileSize"])
        single = len(data)
        while True:
            more = s.recv(65536)
            if not more:
                break
            data += more
        with open(out, "wb") as f:
            f.write(data)
        print("data", single, len(data), flush=True)
    except Exception as e:  # the original prints a message and goes on; we report it
        print("error", type(e).__name__, e, flush=True)


main()
