// Starts Swagger UI on this server's /openapi.json. A file rather than an inline script so
// the page's Content-Security-Policy can forbid inline script (static/docs.py).
"use strict";

window.addEventListener("DOMContentLoaded", function () {
  window.ui = SwaggerUIBundle({
    // Relative to /docs, so the page also works behind a proxy that mounts FLUX on a path.
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    // Swagger UI's default sends the document to an outside validator and shows its badge:
    // nothing may leave this server.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    docExpansion: "list",
    defaultModelsExpandDepth: 1,
    displayRequestDuration: true,
    showExtensions: true,
    showCommonExtensions: true,
  });
});
