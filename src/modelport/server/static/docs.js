// /docs: /openapi.json rendered by the Swagger UI shipped inside modelport.
// validatorUrl null: Swagger UI would otherwise send the document to validator.swagger.io.
"use strict";
window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#ui",
  validatorUrl: null,
  deepLinking: true,
});
