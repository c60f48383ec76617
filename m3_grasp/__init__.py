"""Grasp planning, Z1-on-B1 kinematics and arm backends (the Grasp issue fills this package)."""
