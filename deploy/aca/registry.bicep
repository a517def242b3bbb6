// The container registry the simulator image is built into (`az acr build`), deployed before
// main.bicep so the image exists when the container app first starts.

targetScope = 'resourceGroup'

@description('Azure region of the registry.')
param location string = resourceGroup().location

@description('Lower-case prefix of resource names (3 to 11 letters or digits).')
@minLength(3)
@maxLength(11)
param baseName string = 'aoaisim'

// Registry names are global and letters or digits only: the prefix plus a hash of the group.
resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  name: '${baseName}${uniqueString(resourceGroup().id)}'
  location: location
  sku: {
    name: 'Basic'
  }
  properties: {
    // The container app pulls with a managed identity (main.bicep), so no admin password exists.
    adminUserEnabled: false
  }
}

output name string = registry.name
output loginServer string = registry.properties.loginServer
