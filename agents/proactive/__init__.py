"""Proactive messages: business events turned into messages in a customer's conversations
(agents/proactive/agent.py). See docs/integrations.md."""
