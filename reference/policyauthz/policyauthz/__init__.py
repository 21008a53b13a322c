"""policyauthz: the kit's reference authorization plugin (see driver.py and policy.py)."""
