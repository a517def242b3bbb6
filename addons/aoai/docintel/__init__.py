"""Azure AI Document Intelligence (and its Form Recognizer paths): `service` reads analyze
requests and keeps the analyses; `layout` makes up results shaped like each prebuilt model's.
The generator answering the requests is aoai/generators/docintel.py."""

from .service import ResultStore

__all__ = ["ResultStore"]
