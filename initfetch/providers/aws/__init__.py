"""AWS: Secrets Manager (secretsmanager.py) and SSM Parameter Store (ssm.py), sharing
the session, credential chain and error mapping (session.py) and a base class (base.py)."""
