"""Base URLs: the one check of what a Campfire base URL may be, for the config and the client alike.

The config checks it first, naming the variable or key that set it, before any command starts; the
client checks it again for its own callers. No IO, no httpx (offline commands stay quick to start).
"""

from __future__ import annotations

import ipaddress
import re

from invoicesync.errors import ConfigError

__all__ = ["check_base_url", "shown_url"]

_MAX_URL = 2048
_URL_TEXT = re.compile(r"[A-Za-z0-9\-._~:/@!$&'()*+,;=%\[\]]*")  # RFC 3986 characters but '?' and '#'
_HOST_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST = re.compile(rf"(?=.{{1,253}}$){_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")
_IPV4 = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")
_SCHEME = re.compile(r"^(https?)://", re.IGNORECASE)
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def shown_url(text: str) -> str:
    """A URL for a message: no user name or password (all before the last '@'), at most 100 characters, quoted."""
    if "@" in text:
        scheme, sep, _ = text.partition("://")
        text = (scheme + sep if sep and "@" not in scheme else "") + "***@" + text.rpartition("@")[2]
    return repr(text if len(text) <= 100 else text[:97] + "...")


def check_base_url(url: str, what: str) -> str:
    """An http(s) base URL as the client takes it, without user:password and a trailing slash.

    Refused, naming ``what`` (the variable or the key): another scheme or none, no host or an invalid
    one, a port outside 1-65535, a query or fragment, characters a URL cannot have (white space,
    control and non-ASCII characters), a stray ``%``, more than 2048 characters. A password is never
    shown, and never kept: the API key is the only credential, and it comes from its own variable.
    """
    text = url.strip()

    def bad(problem: str) -> ConfigError:
        return ConfigError(f"{what} {problem}; got {shown_url(text)}")

    if len(text) > _MAX_URL:
        raise ConfigError(f"{what} is too long for a URL ({len(text)} characters; at most {_MAX_URL})")
    scheme = _SCHEME.match(text)
    if scheme is None:
        looks_like_a_host = "://" not in text and "@" not in text and text[:1].isalnum() and _URL_TEXT.fullmatch(text)
        example = shown_url("https://" + text) if looks_like_a_host else "'https://api.meetcampfire.com'"
        raise bad(f"must be an http:// or https:// URL (like {example})")
    if "?" in text or "#" in text:
        raise bad("must not have a query ('?...') or a fragment ('#...')")
    if not _URL_TEXT.fullmatch(text):
        raise bad("holds characters a URL cannot have (white space, control or non-ASCII characters; write an "
                  "international host name in its xn-- form)")
    if _BAD_PERCENT.search(text):
        raise bad("has a '%' that is not followed by two hex digits")
    rest = text[scheme.end():]
    authority, slash, path = rest.partition("/")
    hostport = authority.rpartition("@")[2]  # user:password@ is dropped
    if hostport.startswith("["):  # [IPv6]:port
        inside, closed, after = hostport[1:].partition("]")
        try:
            ipaddress.IPv6Address(inside if closed and (not after or after.startswith(":")) else "-")
        except ValueError:
            raise bad("has an invalid IPv6 host") from None
        port = after[1:]
    else:
        host, _, port = hostport.partition(":")
        if not host:
            raise bad("has no host")
        if not _HOST.fullmatch(host):
            raise bad("has an invalid host name")
        if _IPV4.fullmatch(host):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise bad("has an invalid IPv4 address") from None
    if port and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise bad("has an invalid port (a number from 1 to 65535)")
    return f"{scheme.group(1).lower()}://{hostport}{slash}{path}".rstrip("/")
