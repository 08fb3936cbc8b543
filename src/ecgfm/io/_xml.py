"""Safe XML parsing shared by the XML readers (HL7 aECG, Philips Sierra, GE MUSE).

Entity declarations, external entities and DTD-based tricks are refused (defusedxml), so a
hostile file cannot expand to gigabytes or read local files. Namespaces are stripped from tags
so readers can match ``AnnotatedECG`` rather than ``{urn:hl7-org:v3}AnnotatedECG``.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from ecgfm.errors import ReadError


def parse_xml(path: str | os.PathLike[str], *, data: bytes | None = None) -> ET.Element:
    """Parse an XML file with entity resolution off; return its root with namespaces stripped.

    Raises:
        ReadError: the XML is malformed, empty, or declares entities / external references.
    """
    import defusedxml.ElementTree as DET
    from defusedxml import DefusedXmlException

    if data is None:
        data = Path(path).read_bytes()
    if not data.strip():
        raise ReadError(path, "file is empty")
    try:
        root = DET.fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise ReadError(
            path, f"XML refused: it declares entities or external references ({type(exc).__name__})"
        ) from None
    except ET.ParseError as exc:
        raise ReadError(path, f"malformed XML: {exc}") from None
    for element in root.iter():
        if isinstance(element.tag, str) and element.tag.startswith("{"):
            element.tag = element.tag.split("}", 1)[1]
        if element.attrib and any(k.startswith("{") for k in element.attrib):
            element.attrib = {k.split("}", 1)[-1]: v for k, v in element.attrib.items()}
    return root


def text(element: ET.Element | None, path: str, default: str | None = None) -> str | None:
    """The stripped text at a relative path (``"a/b"``), or ``default``."""
    if element is None:
        return default
    found = element.find(path)
    if found is None or found.text is None:
        return default
    value = found.text.strip()
    return value if value else default
