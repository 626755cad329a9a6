// An OPC-UA server nobody here wrote (node-opcua, not asyncua) for the edge's peer tests:
//   node server.js --port N --pki DIR
// Machine P (Objects/Rig/P): PascalCase variables with EngineeringUnits as a vendor's server has
// them (Pressure in psi, Temperature in °C, BearingTemp in °F, RPM in r/min), a SerialNumber
// that is no sensor, and a SampleCounter bumped with every sample. Machine Q: a Pressure whose
// EngineeringUnits say °C (a unit no pressure can have).
// Security: None and Basic256Sha256 Sign & Encrypt; anonymous or user "rig-edge" with the
// password in $PEER_OPCUA_PASSWORD. Unknown client certificates are trusted, but the server
// checks that a certificate's URI is the client's application URI (BadCertificateUriInvalid).
"use strict";
const {
  OPCUAServer,
  OPCUACertificateManager,
  MessageSecurityMode,
  SecurityPolicy,
  DataType,
  Variant,
  standardUnits,
  makeEUInformation,
} = require("node-opcua");

function option(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const NAMESPACE_URI = "urn:rig-alpha:peer";
const psi = makeEUInformation("PS", "psi", "pound-force per square inch");

async function main() {
  const port = Number(option("--port", "4840"));
  const pki = option("--pki", "./pki");
  const password = process.env.PEER_OPCUA_PASSWORD || "";
  const serverCertificateManager = new OPCUACertificateManager({
    rootFolder: pki,
    automaticallyAcceptUnknownCertificate: true,
  });
  await serverCertificateManager.initialize();
  const server = new OPCUAServer({
    port,
    resourcePath: "/peer",
    serverCertificateManager,
    securityModes: [MessageSecurityMode.None, MessageSecurityMode.SignAndEncrypt],
    securityPolicies: [SecurityPolicy.None, SecurityPolicy.Basic256Sha256],
    allowAnonymous: true,
    userManager: {
      isValidUser: (user, pass) => password !== "" && user === "rig-edge" && pass === password,
    },
    buildInfo: { productName: "rig-alpha peer (node-opcua)" },
  });
  await server.initialize();
  const addressSpace = server.engine.addressSpace;
  const ns = addressSpace.registerNamespace(NAMESPACE_URI);
  const rig = ns.addObject({ organizedBy: addressSpace.rootFolder.objects, browseName: "Rig", nodeId: "s=Rig" });

  let counter = 0;
  const pValues = () => ({
    Pressure: 150 + (counter % 5), // psi
    Temperature: 21.5, // °C
    BearingTemp: 145.0, // °F
    RPM: 3200.0, // r/min
  });
  const units = {
    Pressure: psi,
    Temperature: standardUnits.degree_celsius,
    BearingTemp: standardUnits.degree_fahrenheit,
    RPM: standardUnits.revolutions_per_minute,
  };
  const machines = {};
  for (const machine of ["P", "Q"]) {
    const object = ns.addObject({ componentOf: rig, browseName: machine, nodeId: `s=${machine}` });
    const names = machine === "P" ? Object.keys(units) : ["Pressure"];
    const variables = {};
    for (const name of names) {
      variables[name] = ns.addAnalogDataItem({
        componentOf: object,
        browseName: name,
        nodeId: `s=${machine}/${name}`,
        dataType: "Double",
        engineeringUnits: machine === "P" ? units[name] : standardUnits.degree_celsius,
        engineeringUnitsRange: { low: -1000, high: 10000 },
        value: new Variant({ dataType: DataType.Double, value: machine === "P" ? pValues()[name] : 21.5 }),
      });
    }
    if (machine === "P") {
      ns.addVariable({
        componentOf: object,
        browseName: "SerialNumber",
        nodeId: "s=P/SerialNumber",
        dataType: "String",
        value: new Variant({ dataType: DataType.String, value: "SN-4711" }),
      });
    }
    variables.SampleCounter = ns.addVariable({
      componentOf: object,
      browseName: "SampleCounter",
      nodeId: `s=${machine}/SampleCounter`,
      dataType: "UInt32",
      value: new Variant({ dataType: DataType.UInt32, value: 0 }),
    });
    machines[machine] = variables;
  }

  setInterval(() => {
    counter += 1;
    const values = pValues();
    for (const [name, value] of Object.entries(values)) {
      machines.P[name].setValueFromSource(new Variant({ dataType: DataType.Double, value }));
    }
    machines.Q.Pressure.setValueFromSource(new Variant({ dataType: DataType.Double, value: 21.5 }));
    // the counter last: a counter notification follows the sample's values
    for (const machine of ["P", "Q"]) {
      machines[machine].SampleCounter.setValueFromSource(new Variant({ dataType: DataType.UInt32, value: counter }));
    }
  }, 100);

  await server.start();
  console.log(`node-opcua peer listening on ${server.getEndpointUrl()}`);
  const stop = async () => {
    await server.shutdown(0);
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
