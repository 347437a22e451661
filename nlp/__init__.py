"""NLP: cleaning mail text, matching messages to the CRM and proposing what is missing. Pure."""
