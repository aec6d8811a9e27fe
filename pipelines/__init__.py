"""WorldStudio pipelines: models and methods, no gradio.

Sub-packages: ``attention`` (shared cross-attention mechanism), ``shapesworld``
(synthetic world with known truth), ``models`` (presets and loading), and one
package per method added by later issues.
"""

# Recorded in every output's recipe (pipelines.recipes).
__version__ = "0.1.0"
