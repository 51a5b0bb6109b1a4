"""The attack suite (issue 11): each attack on the jail, shown working outside it and failing inside."""
