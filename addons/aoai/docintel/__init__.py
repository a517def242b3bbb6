"""Azure AI Document Intelligence (and its Form Recognizer paths): `service` answers analyze
and poll requests; `layout` makes up results shaped like each prebuilt model's."""

from .service import DocumentIntelligence, ResultStore, document_intelligence, make_generator

__all__ = ["DocumentIntelligence", "ResultStore", "document_intelligence", "make_generator"]
