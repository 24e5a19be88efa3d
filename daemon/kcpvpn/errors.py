"""Every error kcpvpn raises on purpose, defined once. The native engine
(`kcpvpn._engine`) raises these same classes, so callers catch a type and
never match message text. Each message says what was wrong and what to do.
"""

from __future__ import annotations


class KcpvpnError(Exception):
    """Base of every error kcpvpn raises on purpose."""


class InvalidParameter(KcpvpnError, ValueError):
    """A setting out of range or of the wrong kind."""


class UnsupportedCipher(InvalidParameter):
    """A cipher name kcpvpn does not (or no longer) support."""


class StartupError(KcpvpnError):
    """Something the daemon needs at start is missing or unusable (a bridge,
    the server's name, an interface)."""


class EngineError(KcpvpnError):
    """The data path failed, or was asked something it cannot do."""


class NotPending(EngineError):
    """The handshake was answered already, or expired."""


class AlreadyUsed(EngineError):
    """A one-shot object (a handshake attempt) was used twice."""


# --- network input ----------------------------------------------------------


class PacketError(KcpvpnError):
    """A datagram or message from the network could not be taken."""


class Truncated(PacketError):
    """Shorter than its format allows."""


class Malformed(PacketError):
    """Of an unexpected type, or its fields do not decode."""


class Replayed(PacketError):
    """Received before (its counter is inside the replay window)."""


class TooOld(Replayed):
    """Its counter is behind the replay window."""


class HandshakeError(KcpvpnError):
    """A handshake did not complete."""


class AuthenticationFailed(PacketError, HandshakeError):
    """It did not verify: another secret, or corrupted or forged."""


class CounterExhausted(KcpvpnError):
    """The send counter would wrap: the session needs new keys."""


class StaleHandshake(HandshakeError):
    """Message 1's timestamp is too far from the server's clock."""


class ReplayedHandshake(HandshakeError):
    """The same message 1 was seen before."""


class Busy(HandshakeError):
    """Too many handshakes in progress; try again shortly."""


class Refused(HandshakeError):
    """The server answered and said no; the message is its reason."""


class NoAnswer(HandshakeError):
    """No answer from the server after the last attempt."""
