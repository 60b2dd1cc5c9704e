"""What a trained network is judged by: evaluation on val (evaluate), its tables and confusion
plot (tables), attention maps (attention), and the report gathered from every run (collect)."""
