"""A six-question FAQ shared by the knowledge tests."""

from __future__ import annotations

from agents.knowledge.documents import Document

__all__ = ["FAQ", "faq_documents"]

FAQ = [
    ("reset-password", "How do I reset my password?",
     "Open Settings, choose Security and press Reset password. We email you a link that is "
     "valid for one hour.", {"product": "account"}),
    ("card-declined", "Why was my card declined?",
     "A card is declined when the balance is too low, the card expired, or the bank flagged "
     "the payment as unusual. Call your bank to lift the block.", {"product": "cards"}),
    ("refund-time", "How long does a refund take?",
     "Refunds reach your account within five to seven business days after we approve them.",
     {"product": "payments"}),
    ("delivery-address", "Can I change my delivery address?",
     "You can change the delivery address until the parcel ships, under Orders then Edit "
     "address.", {"product": "orders"}),
    ("close-account", "How do I close my account?",
     "Write to support from the email address of the account; we close it within two days "
     "and delete your data after thirty days.", {"product": "account"}),
    ("intl-fees", "What are the fees for international transfers?",
     "International transfers cost 1% of the amount, at least 2 euros. Transfers within the "
     "euro area are free.", {"product": "payments"}),
]


def faq_documents(tenant: str = "default") -> list[Document]:
    return [Document(id=i, title=t, text=x, tenant=tenant, metadata=m) for i, t, x, m in FAQ]
