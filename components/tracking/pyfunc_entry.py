"""Models-from-code entry point: MLflow runs this file to build the pyfunc, so nothing is unpickled."""

from mlflow.models import set_model

from components.tracking.pyfunc import OESDNPyfunc

set_model(OESDNPyfunc())
