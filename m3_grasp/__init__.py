"""Grasp planning, Z1-on-B1 kinematics and arm backends.

kinematics (pinocchio model of urdf/b1_z1.urdf) -> candidates (grasps fitted to object
points) -> plan (IK, collisions, trajectory, base moves) -> safety (the one command check)
-> backends (dry-run, sim, unitree); run.run_grasp ties them together for ``m3 grasp``.
"""
