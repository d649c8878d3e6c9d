"""The ADB wire format, shared by the virtual phone and its tests.

An ADB transport carries 24-byte message headers (command, arg0, arg1, data length, data checksum,
command XOR 0xffffffff) followed by the payload; the sync service runs its own little protocol of
8-byte requests inside the WRTE payloads of one stream. The constants and layouts follow AOSP's
``adb.h`` / ``file_sync_protocol.h``; the RSA public key format is ``android_pubkey`` (mincrypt's
struct, base64, then `` user@host``). Standard library + ``cryptography`` only.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed


def _cmd(name: bytes) -> int:
    return struct.unpack("<I", name)[0]


A_SYNC, A_CNXN, A_OPEN, A_OKAY = _cmd(b"SYNC"), _cmd(b"CNXN"), _cmd(b"OPEN"), _cmd(b"OKAY")
A_CLSE, A_WRTE, A_AUTH, A_STLS = _cmd(b"CLSE"), _cmd(b"WRTE"), _cmd(b"AUTH"), _cmd(b"STLS")
COMMANDS = {A_SYNC: "SYNC", A_CNXN: "CNXN", A_OPEN: "OPEN", A_OKAY: "OKAY", A_CLSE: "CLSE",
            A_WRTE: "WRTE", A_AUTH: "AUTH", A_STLS: "STLS"}

A_VERSION_MIN = 0x01000000
A_VERSION_SKIP_CHECKSUM = 0x01000001  # peers at this version send checksum 0
A_VERSION = 0x01000001
MAX_PAYLOAD_V1 = 4 * 1024
MAX_PAYLOAD = 1024 * 1024

AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
TOKEN_SIZE = 20

HEADER = struct.Struct("<6I")

# sync protocol (file_sync_protocol.h)
ID_STAT, ID_LIST, ID_SEND, ID_RECV = b"STAT", b"LIST", b"SEND", b"RECV"
ID_DENT, ID_DONE, ID_DATA, ID_OKAY = b"DENT", b"DONE", b"DATA", b"OKAY"
ID_FAIL, ID_QUIT = b"FAIL", b"QUIT"
ID_STAT_V2, ID_LSTAT_V2, ID_LIST_V2, ID_DENT_V2 = b"STA2", b"LST2", b"LIS2", b"DNT2"
SYNC_DATA_MAX = 64 * 1024
SYNC_PATH_MAX = 1024
SYNC_REQUEST = struct.Struct("<4sI")          # id, path length / data size / mtime
SYNC_STAT_V1 = struct.Struct("<4sIII")        # id, mode, size, mtime
SYNC_DENT_V1 = struct.Struct("<4sIIII")       # id, mode, size, mtime, name length
SYNC_STAT_V2 = struct.Struct("<4sIQQIIIIQqqq")  # id, error, dev, ino, mode, nlink, uid, gid, size, a/m/ctime
SYNC_DENT_V2 = struct.Struct("<4sIQQIIIIQqqqI")  # ... + name length


class ProtocolError(Exception):
    """The peer sent something that is not ADB."""


@dataclass(frozen=True)
class Message:
    command: int
    arg0: int
    arg1: int
    data: bytes = b""

    @property
    def name(self) -> str:
        return COMMANDS.get(self.command, f"0x{self.command:08x}")

    def pack(self) -> bytes:
        return HEADER.pack(self.command, self.arg0, self.arg1, len(self.data), checksum(self.data),
                           self.command ^ 0xFFFFFFFF) + self.data


def checksum(data: bytes) -> int:
    """Sum of the payload bytes: required by version-1.0.0 peers (adb-shell), ignored by newer ones."""
    return sum(data) & 0xFFFFFFFF


def read_message(recv_exact: Callable[[int], bytes], max_payload: int = MAX_PAYLOAD) -> Message:
    """Read one message with ``recv_exact(n)`` (which raises on EOF); validates magic and checksum."""
    command, arg0, arg1, length, check, magic = HEADER.unpack(recv_exact(HEADER.size))
    if magic != command ^ 0xFFFFFFFF or command not in COMMANDS:
        raise ProtocolError(f"not an ADB message header (command 0x{command:08x})")
    if length > max_payload:
        raise ProtocolError(f"payload of {length} bytes exceeds the {max_payload}-byte maximum")
    data = recv_exact(length) if length else b""
    if check and checksum(data) != check:
        raise ProtocolError(f"bad checksum on {COMMANDS[command]}")
    return Message(command, arg0, arg1, data)


# --- RSA keys in Android's format ------------------------------------------------------------

_PUBKEY = struct.Struct("<II256s256sI")  # modulus words, n0inv, modulus (LE), R^2 mod n (LE), exponent


def encode_pubkey(key: rsa.RSAPublicKey, comment: str = "harness@virtual-phone") -> bytes:
    """``adbkey.pub`` content for a 2048-bit key: base64(android_pubkey) + ' ' + comment."""
    nums = key.public_numbers()
    n, e = nums.n, nums.e
    if n.bit_length() > 2048:
        raise ValueError("ADB keys are 2048-bit RSA")
    r32 = 1 << 32
    n0inv = r32 - pow(n % r32, -1, r32)
    rr = pow(1 << 2048, 2, n)
    raw = _PUBKEY.pack(64, n0inv, n.to_bytes(256, "little"), rr.to_bytes(256, "little"), e)
    return base64.b64encode(raw) + b" " + comment.encode()


def decode_pubkey(text: bytes | str) -> rsa.RSAPublicKey:
    """Parse one ``adbkey.pub`` / ``adb_keys`` line (trailing comment and NUL allowed)."""
    if isinstance(text, str):
        text = text.encode()
    blob = text.strip(b"\0 \r\n").split(b" ")[0]
    try:
        raw = base64.b64decode(blob, validate=True)
        words, _n0inv, mod, _rr, e = _PUBKEY.unpack(raw)
    except (ValueError, struct.error) as exc:
        raise ValueError(f"not an Android RSA public key: {exc}") from None
    if words != 64:
        raise ValueError(f"unsupported key size: {words * 32} bits")
    return rsa.RSAPublicNumbers(e, int.from_bytes(mod, "little")).public_key()


def sign_token(key: rsa.RSAPrivateKey, token: bytes) -> bytes:
    """What adb clients send in AUTH SIGNATURE: PKCS#1 v1.5 over the token treated as a SHA-1 digest."""
    return key.sign(token, padding.PKCS1v15(), Prehashed(hashes.SHA1()))


def verify_token(key: rsa.RSAPublicKey, token: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, token, padding.PKCS1v15(), Prehashed(hashes.SHA1()))
    except (InvalidSignature, ValueError):
        return False
    return True
